"""The Family interface: batching, loss, prediction, metric and attention maps of one model kind."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from models.recipes import Recipe
from runtime.attention_map import AttentionMap
from runtime.registry import FAMILY_GROUP, Registry, subclass_of
from runtime.text import Vocab, pad_rows


@dataclass
class TaskData:
    """A task's train and held-out examples, plus facts worth recording (e.g. data dates)."""

    train: Any  # a Sequence of examples, or an endless iterator for generated tasks
    test: Sequence[Any]
    meta: dict[str, Any] = field(default_factory=dict)


class Family(abc.ABC):
    """Everything training and evaluation need to know about one model family."""

    name: ClassVar[str]
    task: ClassVar[str]
    metric: ClassVar[str]  # "exact_match" or "accuracy"

    def __init__(self, recipe: Recipe, vocabs: dict[str, Vocab]) -> None:
        self.recipe = recipe
        self.vocabs = vocabs

    @staticmethod
    @abc.abstractmethod
    def load_data(seed: int) -> TaskData:
        """The task's examples; deterministic under `seed`."""

    @classmethod
    def held_out(cls, seed: int, n: int) -> list[Any]:
        """The first `n` held-out examples (what export validation runs end to end)."""
        return list(cls.load_data(seed).test)[:n]

    @staticmethod
    @abc.abstractmethod
    def build_vocabs(data: TaskData) -> dict[str, Vocab]:
        """Vocabularies from the training split only (saved beside the checkpoint)."""

    @abc.abstractmethod
    def model_config(self) -> dict[str, Any]:
        """The full model config (recipe sizes + vocab sizes), stored in config.json."""

    @abc.abstractmethod
    def build_model(self, config: dict[str, Any]) -> nn.Module:
        """A fresh model from a stored model config."""

    @abc.abstractmethod
    def batches(self, data: TaskData, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """Endless training batches."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, float]:
        """Training loss and an accuracy for the progress bar."""

    @abc.abstractmethod
    def predict(self, model: nn.Module, inputs: Sequence[Any]) -> list[Any]:
        """Predictions for raw inputs (strings, value tuples, documents), in eval mode."""

    @abc.abstractmethod
    def target(self, example: Any) -> Any:
        """The expected prediction of a held-out example."""

    @abc.abstractmethod
    def source(self, example: Any) -> Any:
        """The raw input of a held-out example."""

    def readable(self, example: Any) -> bool:
        """Whether the model can read the example's input at all (not beyond a hard source limit,
        as location-based attention has); the server refuses the others."""
        return True

    @abc.abstractmethod
    def parse(self, text: str) -> Any:
        """A raw input from command-line text (for plots)."""

    @abc.abstractmethod
    def attention_map(self, model: nn.Module, raw: Any) -> AttentionMap:
        """The attention a model puts on one input."""

    def baseline(self, data: TaskData) -> float | None:
        """A non-neural reference figure on the same split, where the task has one."""
        return None

    def predictions(self, model: nn.Module, examples: Sequence[Any], batch_size: int = 256) -> list[Any]:
        """The model's predictions for the examples' inputs, `batch_size` at a time."""
        model.eval()
        out: list[Any] = []
        for i in range(0, len(examples), batch_size):
            out += self.predict(model, [self.source(ex) for ex in examples[i : i + batch_size]])
        return out

    def evaluate(self, model: nn.Module, test: Sequence[Any], batch_size: int = 256) -> dict[str, Any]:
        """Held-out metric: exact match / accuracy of predictions against targets."""
        preds = self.predictions(model, test, batch_size)
        hits = sum(p == self.target(ex) for p, ex in zip(preds, test, strict=True))
        return {"metric": self.metric, "value": hits / max(len(test), 1), "n": len(test)}


def families() -> Registry[type[Family]]:
    """The family registry: the `attnserve.families` entry-point group (runtime.registry). A family
    that serves a task other than its default registers as "family/task" too."""
    return Registry(FAMILY_GROUP, "family", subclass_of(Family))


def get_family(name: str, task: str | None = None, package: str | None = None) -> type[Family]:
    """The Family class registered under `name`, for `task` where the family serves several;
    `package`: the distribution that registered it when the checkpoint was saved (named if missing)."""
    return families().load(family_entry(name, task), package)


def family_entry(name: str, task: str | None = None) -> str:
    """The registered name of `name` on `task`: "family/task" where one is registered, else the family."""
    per_task = f"{name}/{task}"
    return per_task if task and per_task in families().names() else name


def family_names() -> list[str]:
    """The registered family names (the per-task registrations aside)."""
    return [name for name in families().names() if "/" not in name]


def pad(rows: Sequence[Sequence[int]], value: int = 0) -> Tensor:
    """Right-pad integer rows into a [B, max_len] long tensor (runtime.text.pad_rows)."""
    return torch.from_numpy(pad_rows(rows, value))
