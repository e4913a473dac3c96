"""docs/export.md, step by step: a user's own attention model through the exporter."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import Tensor, nn

from exporters.export import export_model
from models.attention import masked_softmax
from models.components.spec import Component, ComponentSpec, ExportSpec, TensorSpec, lengths_mask
from runtime.flops import FlopsFile

pytestmark = pytest.mark.integration  # exports a model with torch.onnx and runs it on ONNX Runtime


# 1. The user's model: a token classifier pooling with cosine-similarity attention.
class CosineAttentionClassifier(nn.Module):
    def __init__(self, vocab: int = 50, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.query = nn.Parameter(torch.randn(dim))
        self.out = nn.Linear(dim, classes)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        x = self.emb(ids)  # [B, T, D]
        scores = 5 * torch.cosine_similarity(x, self.query.expand_as(x), dim=-1)  # [B, T]
        weights = masked_softmax(scores, mask)  # [B, T]
        pooled = torch.bmm(weights.unsqueeze(1), x).squeeze(1)  # [B, D]
        return self.out(pooled), weights


# 2. Its export spec: one component, inputs/outputs as {name: axes}, shapes to verify.
class CosineSpec(ExportSpec):
    family = "cosine-classifier"
    example = {"batch": 2, "tokens": 6}
    check_shapes = [
        {"batch": 1, "tokens": 1},
        {"batch": 2, "tokens": 6},
        {"batch": 5, "tokens": 17},
        {"batch": 16, "tokens": 64},
    ]

    def components(self) -> list[Component]:
        spec = ComponentSpec(
            "classify",
            inputs=(
                TensorSpec.of("ids", "int64", "batch", "tokens"),
                TensorSpec.of("mask", "bool", "batch", "tokens"),
            ),
            outputs=(
                TensorSpec.of("logits", "float32", "batch", 3),
                TensorSpec.of("attention", "float32", "batch", "tokens"),
            ),
        )

        def inputs(dims: dict[str, int], gen: torch.Generator) -> dict[str, Tensor]:
            mask = lengths_mask(dims["batch"], dims["tokens"], gen)
            return {"ids": torch.randint(0, 50, (dims["batch"], dims["tokens"]), generator=gen), "mask": mask}

        return [Component(spec, self.model, inputs)]

    def end_to_end(self, family, examples, runners):  # no task data: parity is the check
        return {}


def test_a_users_own_model_exports_and_verifies(tmp_path: Path):
    torch.manual_seed(0)
    model = CosineAttentionClassifier().eval()
    # 3. Run the export: graphs + export_report.json, ValidationError if anything is off.
    report = export_model(CosineSpec(model, {}), tmp_path / "cosine" / "1", metadata={"owner": "me"})
    # 4. Read the report.
    on_disk = json.loads((tmp_path / "cosine" / "1" / "export_report.json").read_text())
    assert on_disk["failures"] == [] and report["failures"] == []
    assert on_disk["parity"]["max_abs_diff"] <= 1e-4
    assert len({json.dumps(c["dims"]) for c in on_disk["parity"]["checks"]}) == 4
    sess = ort.InferenceSession(str(tmp_path / "cosine" / "1" / "classify.onnx"))
    assert sess.get_modelmeta().custom_metadata_map["owner"] == "me"
    assert [d for d in sess.get_inputs()[0].shape] == ["batch", "tokens"]
    # its FLOPs per call, a polynomial in its own axes, and its parameters
    flops = FlopsFile.read(tmp_path / "cosine" / "1")
    assert flops is not None and flops.parameters == sum(p.numel() for p in model.parameters())
    assert set(flops.components["classify"].total.axes) == {"batch", "tokens"}
