"""Iteration-level decoding (runtime.stepwise) over the fake models: requests that join a running
batch at random steps, and leave it when done or cancelled, answer exactly as they do alone."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions
from runtime.config import TORCH_DIR, ModelConfig
from runtime.pipelines.base import Prepared, bytes_tensor
from runtime.pipelines.factory import build_pipeline
from runtime.stepwise import DecodeBatch, Track, supports
from tests.helpers.fakes import FAKES, Served, random_policy, seq2seq_runners, transformer_runners, translate_vocabs

WORDS = ["hello world", "ab-1", "x", "2. september 1983", "stepwise", "a b c d e f", "zz", "join late"]
DATES = [
    "Freitag, 2. September 1983", "14 de març 2003", "perjantai 7. kesäkuuta 1957", "3/4/21", "1 Jan 2000",
    "Sunday, December 31, 1899", "el 5 de mayo de 1862", "2019-11-30", "venerdì 13 ottobre 2006",
]  # fmt: skip


@pytest.fixture
def noisy_gru(served: Callable[[str], Served]) -> Served:
    """copy-gru deciding by logits seeded from each row's whole history: any mix-up of rows or of
    beam hypotheses changes the answer."""
    model = served("copy-gru")
    _, tgt = translate_vocabs()
    return Served(model.pipeline, seq2seq_runners(random_policy(len(tgt), seed=7)))


@pytest.fixture
def noisy_transformer(served: Callable[[str], Served]) -> Served:
    """copy-transformer deciding as noisy_gru does, from the tokens its KV cache holds for the row
    (only the steps its cache mask marks real, which must be its positions in order)."""
    model = served("copy-transformer")
    _, tgt = translate_vocabs()
    return Served(model.pipeline, transformer_runners(random_policy(len(tgt), seed=7)))


@pytest.fixture(params=["gru", "transformer"])
def noisy(request: pytest.FixtureRequest) -> Served:
    return request.getfixturevalue(f"noisy_{request.param}")


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


def assert_same(alone: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float = 1e-6) -> None:
    assert list(got) == list(alone)
    for name, expected in alone.items():
        assert got[name].shape == expected.shape, name
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got[name], expected, atol=atol, rtol=0)
        else:
            np.testing.assert_array_equal(got[name], expected)


@pytest.mark.parametrize("params", [{}, {"max_length": 4}, {"beam_size": 3}], ids=["greedy", "cut", "beam"])
def test_requests_joining_at_any_step_answer_as_alone(noisy: Served, params: dict[str, Any]):
    inputs = [{"text": bytes_tensor(WORDS[i : i + 1 + i % 2])} for i in range(len(WORDS) - 1)]  # 1 or 2 items
    prepared = [noisy.pipeline.prepare(x, params) for x in inputs]
    for seed in range(3):
        answers = decode_in_flight(noisy, prepared, seed)
        for i, x in enumerate(inputs):
            assert_same(noisy.run(x, **params), answers[i])


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


def test_kv_caches_are_left_padded_for_newcomers_and_cropped_when_long_rows_leave(
    served: Callable[[str], Served],
):
    copy = served("copy-transformer")  # answers len(word) + 1 steps: none finishes early here
    pipeline, runners = copy.pipeline, copy.runners
    decoder = next(c for c in pipeline.config.component_list() if c.name == "decoder_step").signature
    batch = DecodeBatch(pipeline.config.decode, decoder)
    words = ["hello world", "ab", "stepwise"]
    prepared = [pipeline.prepare({"text": bytes_tensor([w])}, {}) for w in words]
    tracks = [Track(i, pipeline.plan(p), pipeline.source_lengths(p)) for i, p in enumerate(prepared)]
    batch.join(tracks[:1], runners["encoder"](pipeline.encoder_feeds(prepared[:1])))
    for _ in range(3):
        batch.step(runners["decoder_step"])
    assert batch.cached == 3 and batch.feeds["past_k"].shape[3] == 3
    batch.join(tracks[1:], runners["encoder"](pipeline.encoder_feeds(prepared[1:])))
    assert batch.feeds["past_k"].shape[1:4:2] == (3, 3) and not batch.feeds["past_k"][:, 1:, :, :, 0].any()
    batch.step(runners["decoder_step"])
    tracks[0].cancelled = True
    batch.step(runners["decoder_step"])  # the long row leaves first: the others have two steps cached
    assert batch.cached == 2 and batch.feeds["past_k"].shape[3] == 2 and batch.feeds["past_v"].shape[3] == 2
    finished = []
    while batch.tracks:
        finished += batch.step(runners["decoder_step"])
    assert finished == tracks[1:] and batch.cached == 0
    for i in (1, 2):
        alone = copy.run({"text": bytes_tensor([words[i]])})
        assert_same(alone, pipeline.answer(prepared[i], *tracks[i].result()))


def test_rows_at_other_steps_are_refused_without_their_positions(noisy_transformer: Served):
    """The fake Transformer can fail the tests above: a left-padded cache fed as if every step were
    real is refused."""
    decode = noisy_transformer.runners["decoder_step"]
    encoded = noisy_transformer.runners["encoder"]({"src_ids": np.array([[5, 6]]), "src_mask": np.ones((1, 2), bool)})
    first = {**encoded, "prev_ids": np.array([1]), "src_mask": np.ones((1, 2), bool), "positions": np.array([0])}
    empty = np.zeros((2, 1, 2, 0, 4), np.float32)
    out = decode({**first, "past_k": empty, "past_v": empty, "cache_mask": np.ones((1, 0), bool)})
    padded = {k: np.pad(out[f"present_{k[-1]}"], [(0, 0)] * 3 + [(2, 0), (0, 0)]) for k in ("past_k", "past_v")}
    second = {**first, **padded, "prev_ids": np.array([5]), "positions": np.array([1])}
    decode({**second, "cache_mask": np.array([[False, False, True]])})  # its one real step
    with pytest.raises(ValueError, match="cached steps"):
        decode({**second, "cache_mask": np.ones((1, 3), bool)})


def test_a_growing_cache_shares_a_batch_only_with_per_row_steps():
    transformer = FAKES["copy-transformer"]().config
    assert supports(transformer.decode) and supports(FAKES["copy-gru"]().config.decode)
    decoder = next(c for c in transformer.component_list() if c.name == "decoder_step").signature
    DecodeBatch(transformer.decode, decoder)
    without = transformer.decode.model_copy(update={"positions_input": None, "cache_mask_input": None})
    assert not supports(without)
    with pytest.raises(ValueError, match="growing inputs"):
        DecodeBatch(without, decoder)


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def dates_transformer(reference_repository: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    """The exported dates-transformer of the reference repository, over each of its backends."""
    config = ModelConfig.load(reference_repository / "dates-transformer" / "config.yaml")
    version = reference_repository / "dates-transformer" / "1"
    if request.param == "torch":
        from backends.torch import TorchBackend, TorchOptions

        backends = {
            c.name: TorchBackend.load(version / TORCH_DIR, c, "cpu", TorchOptions()) for c in config.component_list()
        }
    else:
        backends = {
            c.name: OnnxRuntimeBackend.load(version, c, "cpu", OnnxRuntimeOptions()) for c in config.component_list()
        }
    yield Served(build_pipeline(config, version), {name: b.infer for name, b in backends.items()})
    for backend in backends.values():
        backend.close()


@pytest.mark.parametrize("params", [{}, {"beam_size": 3}], ids=["greedy", "beam"])
def test_dates_transformer_requests_joining_at_different_steps_answer_as_alone(
    dates_transformer: Served, params: dict[str, Any]
):
    inputs = [{"text": bytes_tensor(DATES[i : i + 1 + i % 2])} for i in range(len(DATES) - 1)]  # 1 or 2 items
    prepared = [dates_transformer.pipeline.prepare(x, params) for x in inputs]
    decoder, mixed = dates_transformer.runners["decoder_step"], []

    def spy(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mixed.append(len(set(feeds["positions"].tolist())) > 1 and not feeds["cache_mask"].all())
        return decoder(feeds)

    answers = decode_in_flight(Served(dates_transformer.pipeline, {**dates_transformer.runners, "decoder_step": spy}),
                               prepared, seed=0)  # fmt: skip
    assert sum(mixed) >= 3  # steps whose rows sat at different positions, caches padded
    for i, x in enumerate(inputs):
        assert_same(dates_transformer.run(x, **params), answers[i], atol=1e-4)
