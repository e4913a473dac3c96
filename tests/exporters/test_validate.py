"""The validator catches what the exporter gets wrong silently."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from exporters.export import export_components
from exporters.validate import ValidationError
from models.components.builtin import TransformerSpec
from models.components.spec import Component, ComponentSpec, ExportSpec, TensorSpec, lengths_mask
from models.transformer import Transformer, TransformerConfig

pytestmark = pytest.mark.integration  # each test exports real graphs with torch.onnx and runs them


class OneHotPositions(nn.Module):
    """Hard attention written with F.one_hot(idx, S): the exporter freezes S (docs/export-pitfalls.md, G2)."""

    def forward(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        idx = scores.masked_fill(~mask, -1e9).argmax(-1)  # [B]
        return F.one_hot(idx, scores.size(1)).float()  # [B, S]


class FrozenSpec(ExportSpec):
    family = "test-frozen"
    example = {"batch": 2, "src_len": 7}
    check_shapes = [{"batch": 1, "src_len": 1}, {"batch": 2, "src_len": 7}, {"batch": 3, "src_len": 12}]

    def components(self) -> list[Component]:
        spec = ComponentSpec(
            "pick",
            inputs=(
                TensorSpec.of("scores", "float32", "batch", "src_len"),
                TensorSpec.of("mask", "bool", "batch", "src_len"),
            ),
            outputs=(TensorSpec.of("weights", "float32", "batch", "src_len"),),
        )

        def inputs(d, g):
            return {"scores": torch.randn(d["batch"], d["src_len"], generator=g),
                    "mask": lengths_mask(d["batch"], d["src_len"], g)}  # fmt: skip

        return [Component(spec, self.model, inputs)]

    def end_to_end(self, family, examples, runners):
        return {}


def test_a_frozen_length_fails_with_a_clear_message(tmp_path: Path):
    spec = FrozenSpec(OneHotPositions(), {})
    _, report = export_components(spec, spec.components(), tmp_path, {})
    with pytest.raises(ValidationError) as err:
        report.raise_if_failed("one-hot")
    message = str(err.value)
    assert "pick: weights axis 1 (src_len) is frozen at 7; it must stay symbolic" in message
    assert "pick" in message and "src_len': 12" in message  # the run at another length failed too


TINY_TRANSFORMER = {"src_vocab": 20, "tgt_vocab": 12, "d_model": 16, "num_heads": 2, "ff_dim": 16,
                    "enc_layers": 1, "dec_layers": 2, "max_len": 64}  # fmt: skip


class CacheMaskIgnored(nn.Module):
    """A decoder_step that takes the cache mask but attends to every cached step, padding included."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        *rest, positions, cache_mask = args
        return self.model.decode_step(*rest, positions, torch.ones_like(cache_mask))


class MaskIgnoredSpec(TransformerSpec):
    family = "test-cache-mask-ignored"

    def components(self) -> list[Component]:
        enc, dec = super().components()
        return [enc, Component(dec.spec, CacheMaskIgnored(self.model), dec.make_inputs)]


def tiny_transformer() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(**TINY_TRANSFORMER))


def test_transformer_rows_at_different_steps_export_symbolic_and_answer_as_alone(tmp_path: Path):
    spec = TransformerSpec(tiny_transformer(), TINY_TRANSFORMER)
    decoder = spec.components()[1]  # the encoder's export is checked by test_export
    assert decoder.spec.name == "decoder_step" and {"positions", "cache_mask"} <= set(decoder.spec.input_names)
    _, report = export_components(spec, [decoder], tmp_path, {})
    assert report.failures == []
    graph = onnx.load(str(tmp_path / "decoder_step.onnx")).graph
    inputs = {v.name: [d.dim_param for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert inputs["positions"] == ["batch"] and inputs["cache_mask"] == ["batch", "past_len"]
    checked = {json.dumps(r["dims"], sort_keys=True) for r in report.rows_alone}
    assert len(checked) >= 3  # every check shape with two rows or more, lengths other than the example's
    assert max(r["rows_alone_max_abs_diff"] for r in report.rows_alone) <= 1e-4


def test_a_decoder_step_that_attends_to_cache_padding_fails_validation(tmp_path: Path):
    spec = MaskIgnoredSpec(tiny_transformer(), TINY_TRANSFORMER)
    _, report = export_components(spec, spec.components()[1:], tmp_path, {})
    assert any("rows at different steps differ from the same rows alone" in f for f in report.failures), report.failures
