"""Tiny random-weight recipes of every family (trained a few steps in a test), and the committed
debian-docs sample the debian-docs task reads instead of the full corpus."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from models.recipes import Recipe, TrainConfig
from tests.helpers.paths import FIXTURE_DOCS

BACKEND_FAMILY = "seq2seq"  # the family whose tiny model the backend contract tests export

TINY: dict[str, Recipe] = {
    "seq2seq": Recipe(
        name="tiny-seq2seq", task="dates", family="seq2seq", attention="local-p",
        model={"emb_dim": 8, "hidden": 16, "attn_hidden": 8},
        train=TrainConfig(steps=3, batch_size=8, threads=1),
    ),
    "transformer": Recipe(
        name="tiny-transformer", task="dates", family="transformer", attention="multihead",
        model={"d_model": 16, "num_heads": 2, "ff_dim": 16, "enc_layers": 1, "dec_layers": 2},
        train=TrainConfig(steps=3, batch_size=8, threads=1),
    ),
    "pointer": Recipe(
        name="tiny-pointer", task="sorting", family="pointer", attention="additive",
        model={"emb_dim": 8, "hidden": 16, "attn_hidden": 8},
        train=TrainConfig(steps=3, batch_size=8, threads=1),
    ),
    "han": Recipe(
        name="tiny-han", task="debian-docs", family="han", attention="additive",
        model={"emb_dim": 8, "hidden": 8, "attn_hidden": 8},
        train=TrainConfig(steps=3, batch_size=4, threads=1),
    ),
}  # fmt: skip


@contextmanager
def fixture_docs() -> Iterator[None]:
    """Point the debian-docs task at the committed fixture while the block runs (subprocesses too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNSERVE_DEBIAN_DOCS", str(FIXTURE_DOCS))
        yield
