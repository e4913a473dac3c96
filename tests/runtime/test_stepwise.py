"""Iteration-level decoding (runtime.stepwise) over the fake models: requests that join a running
batch at random steps, and leave it when done or cancelled, answer exactly as they do alone."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from runtime.pipelines.base import Prepared, bytes_tensor
from runtime.stepwise import DecodeBatch, Track, supports
from tests.fakes import FAKES, random_policy, seq2seq_runners, translate_vocabs
from tests.runtime.conftest import Served

WORDS = ["hello world", "ab-1", "x", "2. september 1983", "stepwise", "a b c d e f", "zz", "join late"]


@pytest.fixture
def noisy_gru(served: Callable[[str], Served]) -> Served:
    """copy-gru deciding by logits seeded from each row's whole history: any mix-up of rows or of
    beam hypotheses changes the answer."""
    model = served("copy-gru")
    _, tgt = translate_vocabs()
    return Served(model.pipeline, seq2seq_runners(random_policy(len(tgt), seed=7)))


def decode_in_flight(model: Served, prepared: list[Prepared], seed: int) -> dict[int, dict[str, np.ndarray]]:
    """Decode every request on one running batch, newcomers joining between steps at random."""
    pipeline, runners = model.pipeline, model.runners
    decoder = next(c for c in pipeline.config.component_list() if c.name == "decoder_step").signature
    batch = DecodeBatch(pipeline.config.decode, decoder)
    rng, waiting, answers = random.Random(seed), list(range(len(prepared))), {}
    while waiting or batch.tracks:
        k = rng.choice([0, 0, 1, 3])  # requests arriving before this step
        arriving, waiting = waiting[:k], waiting[k:]
        if arriving:
            tracks = [Track(i, pipeline.plan(prepared[i]), pipeline.source_lengths(prepared[i])) for i in arriving]
            batch.join(tracks, runners["encoder"](pipeline.encoder_feeds([prepared[i] for i in arriving])))
        for track in batch.step(runners["decoder_step"]):
            answers[track.handle] = pipeline.answer(prepared[track.handle], *track.result())
    return answers


def assert_same(alone: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert list(got) == list(alone)
    for name, expected in alone.items():
        assert got[name].shape == expected.shape, name
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got[name], expected, atol=1e-6, rtol=0)
        else:
            np.testing.assert_array_equal(got[name], expected)


@pytest.mark.parametrize("params", [{}, {"max_length": 4}, {"beam_size": 3}], ids=["greedy", "cut", "beam"])
def test_requests_joining_at_any_step_answer_as_alone(noisy_gru: Served, params: dict[str, Any]):
    inputs = [{"text": bytes_tensor(WORDS[i : i + 1 + i % 2])} for i in range(len(WORDS) - 1)]  # 1 or 2 items
    prepared = [noisy_gru.pipeline.prepare(x, params) for x in inputs]
    for seed in range(3):
        answers = decode_in_flight(noisy_gru, prepared, seed)
        for i, x in enumerate(inputs):
            assert_same(noisy_gru.run(x, **params), answers[i])


def test_pointer_requests_of_different_lengths_share_the_batch(served: Callable[[str], Served]):
    sorter = served("sorter")
    rng = np.random.default_rng(0)
    inputs = [{"values": rng.choice(100, size=(1 + i % 2, 3 + i % 7), replace=False)} for i in range(10)]
    prepared = [sorter.pipeline.prepare(x, {}) for x in inputs]
    answers = decode_in_flight(sorter, prepared, seed=1)
    for i, x in enumerate(inputs):
        assert_same(sorter.run(x), answers[i])


def test_a_cancelled_request_leaves_before_the_next_step(noisy_gru: Served):
    pipeline, runners = noisy_gru.pipeline, noisy_gru.runners
    prepared = [pipeline.prepare({"text": bytes_tensor([w])}, {}) for w in ("hello world", "stepwise")]
    decoder = next(c for c in pipeline.config.component_list() if c.name == "decoder_step").signature
    batch = DecodeBatch(pipeline.config.decode, decoder)
    tracks = [Track(i, pipeline.plan(p), pipeline.source_lengths(p)) for i, p in enumerate(prepared)]
    batch.join(tracks, runners["encoder"](pipeline.encoder_feeds(prepared)))
    batch.step(runners["decoder_step"])
    assert batch.rows == 2 and batch.width == len("hello world")
    tracks[0].cancelled = True
    finished = []
    finished += batch.step(runners["decoder_step"])
    assert batch.tracks == [tracks[1]] and batch.width == len("stepwise")  # its rows and padding went
    while batch.tracks:
        finished += batch.step(runners["decoder_step"])
    assert finished == [tracks[1]]
    assert_same(noisy_gru.run({"text": bytes_tensor(["stepwise"])}), pipeline.answer(prepared[1], *tracks[1].result()))


def test_a_growing_cache_cannot_share_a_batch_across_requests():
    transformer = FAKES["copy-transformer"]().config
    assert not supports(transformer.decode) and supports(FAKES["copy-gru"]().config.decode)
    decoder = next(c for c in transformer.component_list() if c.name == "decoder_step").signature
    with pytest.raises(ValueError, match="growing inputs"):
        DecodeBatch(transformer.decode, decoder)
