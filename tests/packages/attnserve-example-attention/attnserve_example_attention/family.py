"""The model on attnserve's sorting task: its training family and its export spec.

Both reuse attnserve's pointer-network contract (the `sort` pipeline's encoder + decoder_step
graphs); only the model they build is this package's own.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from torch import nn

from attnserve_example_attention.model import PointerConfig, SortPointer
from models.components.builtin import PointerSpec
from models.data import sorting
from models.families.pointer import PointerFamily


class CosinePointerFamily(PointerFamily):
    """Sorting 5-15 distinct integers with SortPointer (the recipe names its attention)."""

    name = "cosine-pointer"

    def model_config(self) -> dict[str, Any]:
        config = PointerConfig(max_value=sorting.MAX_VALUE, attention=self.recipe.attention, **self.recipe.model)
        return asdict(config)

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        return SortPointer(PointerConfig(**config))


class CosinePointerSpec(PointerSpec):
    """The pointer network's two graphs (encoder, decoder_step), cut from SortPointer."""

    family = "cosine-pointer"
