"""The validator catches what the exporter gets wrong silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from exporters.export import export_components
from exporters.validate import ValidationError
from models.components.spec import Component, ComponentSpec, ExportSpec, TensorSpec, lengths_mask


class OneHotPositions(nn.Module):
    """Hard attention written with F.one_hot(idx, S): the exporter freezes S (onnx-export.md G2)."""

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
