"""The pointer-network family on the `sorting` task: values are ids, outputs are positions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.data import sorting
from models.families.base import AttentionMap, Family, TaskData, pad
from runtime.text import Vocab

Values = tuple[int, ...]


class PointerFamily(Family):
    """Sort 5-15 distinct integers by pointing at input positions in ascending order."""

    name = "pointer"
    task = "sorting"
    metric = "exact_match"

    @staticmethod
    def load_data(seed: int) -> TaskData:
        test = sorting.test_set(seed)
        return TaskData(
            train=sorting.train_stream(seed, test),
            test=test,
            meta={"max_value": sorting.MAX_VALUE, "test_len": sorting.TEST_LEN},
        )

    @staticmethod
    def build_vocabs(data: TaskData) -> dict[str, Vocab]:
        return {}  # values are ids directly

    def model_config(self) -> dict[str, Any]:
        from models.pointer import PointerConfig

        cfg = PointerConfig(max_value=sorting.MAX_VALUE, attention=self.recipe.attention, **self.recipe.model)
        return asdict(cfg)

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        from models.pointer import PointerConfig, PointerNet

        return PointerNet(PointerConfig(**config))

    @staticmethod
    def encode_values(rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Values [B, N] (0-padded) and mask [B, N]; ValueError on empty or out-of-range rows."""
        for row in rows:
            if not row:
                raise ValueError("empty value sequence")
            if any(not 0 <= v < sorting.MAX_VALUE for v in row):
                raise ValueError(f"values must lie in [0, {sorting.MAX_VALUE}), got {tuple(row)}")
        values = pad(rows, 0)  # [B, N]
        lengths = torch.tensor([len(r) for r in rows])  # [B]
        mask = torch.arange(values.size(1)).unsqueeze(0) < lengths.unsqueeze(1)  # [B, N]
        return values, mask

    def batches(self, data: TaskData, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        # The stream was seeded by load_data; `seed` adds nothing for a generated task.
        while True:
            chunk = [next(data.train) for _ in range(batch_size)]
            values, mask = self.encode_values([v for v, _ in chunk])
            yield {"values": values, "mask": mask, "order": pad([o for _, o in chunk], 0)}

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, float]:
        logits, _ = model(batch["values"], batch["mask"], batch["order"])  # [B, N, N]
        valid = batch["mask"]  # [B, N]: step t is valid where position t is
        gold = batch["order"].masked_fill(~valid, -100)  # [B, N]
        loss = F.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=-100)
        acc = ((logits.argmax(-1) == gold) & valid).sum().item() / max(int(valid.sum()), 1)
        return loss, acc

    def decode(self, model: nn.Module, inputs: Sequence[Values]) -> tuple[list[Values], Tensor]:
        """Predicted orders (valid prefix only) and attention [B, N, N]."""
        model.eval()
        values, mask = self.encode_values(inputs)
        order, attn = model.greedy(values, mask)  # type: ignore[operator]  # [B, N], [B, N, N]; nn.Module attributes are typed Tensor | Module
        return [tuple(row[: len(v)]) for row, v in zip(order.tolist(), inputs, strict=True)], attn

    def predict(self, model: nn.Module, inputs: Sequence[Values]) -> list[Values]:
        return self.decode(model, inputs)[0]

    def source(self, example: sorting.Example) -> Values:
        return example[0]

    def target(self, example: sorting.Example) -> Values:
        return example[1]

    def parse(self, text: str) -> Values:
        """ "3 17 5" -> (3, 17, 5): 1 to MAX_LEN distinct integers in [0, MAX_VALUE).

        Lengths below the trained MIN_LEN are accepted (short inputs make readable plots).
        """
        try:
            values = tuple(int(tok) for tok in text.replace(",", " ").split())
        except ValueError:
            raise ValueError(f"expected space-separated integers, got {text!r}") from None
        if not 1 <= len(values) <= sorting.MAX_LEN:
            raise ValueError(f"expected 1 to {sorting.MAX_LEN} values, got {len(values)}")
        if len(set(values)) != len(values):
            raise ValueError(f"values must be distinct, got {values}")
        if any(not 0 <= v < sorting.MAX_VALUE for v in values):
            raise ValueError(f"values must lie in [0, {sorting.MAX_VALUE}), got {values}")
        return values

    def attention_map(self, model: nn.Module, raw: Values) -> AttentionMap:
        orders, attn = self.decode(model, [raw])
        order = orders[0]
        emitted = [str(raw[i]) for i in order]
        return AttentionMap(
            rows=emitted,
            cols=[str(v) for v in raw],
            weights=attn[0, : len(raw), : len(raw)].numpy(),
            prediction=" ".join(emitted),
        )
