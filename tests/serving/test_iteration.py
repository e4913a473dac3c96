"""The iteration-level scheduler alone (serving/scheduler/iteration.py) over the fake models: a test
holds every decoder step and lets them go one at a time, so joins, leaves, cancellation, deadlines
and a full queue are reached deterministically; answers must equal the pipeline's answers alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from runtime.config import IterationBatching, ModelConfig
from runtime.decode import Runner
from runtime.errors import BackendFailure, DeadlineExceeded, ModelUnavailable, QueueFull
from runtime.pipelines.base import Pipeline, bytes_tensor
from runtime.pipelines.factory import build_pipeline
from serving.dataplane import DataPlane
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.scheduler import Calls, Execution, IterationScheduler, Policy
from serving.stats import StatsRegistry
from tests.helpers.fakes import (
    FAKES,
    BackendPool,
    copy_gru,
    random_policy,
    seq2seq_runners,
    translate_vocabs,
    write_model,
    write_repository,
)
from tests.helpers.wait import wait_until_async

WORDS = ["hello world", "ab-1", "x", "2. september 1983", "stepwise", "a b c d e f", "zz", "join late"]


@pytest.fixture(scope="module")
def fake_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("fakes"), ["copy-gru", "sorter"])


def pipeline_of(repository: Path, kind: str) -> Pipeline:
    fake = FAKES[kind]()
    return build_pipeline(fake.config, repository / fake.name / "1")


EVERY_STEP = IterationBatching(max_waiting_steps=1)  # newcomers join before every decoder step


class Harness:
    """An IterationScheduler whose decoder steps wait for the test (`step()`), unless `free`.
    Newcomers join as `joins` says (by default before every step, which most tests follow)."""

    def __init__(
        self,
        pipeline: Pipeline,
        runners: dict[str, Runner],
        inline: bool = False,
        joins: IterationBatching = EVERY_STEP,
        **policy: Any,
    ) -> None:
        self.pipeline = pipeline
        self.runners = runners
        self.permits = threading.Semaphore(0)
        self.free = threading.Event()
        self.reached = 0  # decoder steps that reached `hold` (the driver took its newcomers before each)
        self.released = 0
        self.executions: list[Execution] = []
        self.step_rows: list[int] = []  # rows of every decoder step, as the scheduler records them
        self.fail = False  # the next decoder steps raise BackendFailure
        self.fail_encoder = False  # the next encoder calls raise BackendFailure
        self.threads: list[int] = []  # the thread of each decoder step
        self.executor = ThreadPoolExecutor(2)
        self.scheduler = IterationScheduler(
            "model 'fake' version 1", pipeline, self.instrument,  # type: ignore[arg-type]
            Policy(**{"max_batch_size": 8, "batching": False, "concurrency": 1, **policy}),
            self.executor, self.executions.append, self.record_steps, lambda: inline,
        )  # fmt: skip
        self.scheduler.joins = joins

    def instrument(self, calls: Calls) -> dict[str, Runner]:
        def timed(name: str, runner: Runner) -> Runner:
            def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                try:
                    if name == "decoder_step":
                        self.hold()
                    elif self.fail_encoder:
                        raise BackendFailure("encoder failed")
                    return runner(feeds)
                finally:
                    calls.append((name, 0, 1))

            return run

        return {name: timed(name, runner) for name, runner in self.runners.items()}

    def hold(self) -> None:
        self.threads.append(threading.get_ident())
        self.reached += 1
        if not self.free.is_set():
            assert self.permits.acquire(timeout=10), "the test never let the step go"
        if self.fail:
            raise BackendFailure("decoder_step failed")

    def record_steps(self, rows: list[int], calls: Calls) -> None:
        assert [c[0] for c in calls] == ["decoder_step"] * len(rows)
        self.step_rows += rows

    def submit(self, text: list[str] | None = None, deadline: float | None = None, on_step: Any = None, **params):
        inputs = {"text": bytes_tensor(text)} if text is not None else params.pop("inputs")
        prepared = self.pipeline.prepare(inputs, params)
        return asyncio.ensure_future(self.scheduler.submit(prepared, deadline, on_step))

    def alone(self, text: list[str], **params: Any) -> dict[str, np.ndarray]:
        return self.pipeline.run({"text": bytes_tensor(text)}, params, self.runners)

    async def step(self, n: int = 1) -> None:
        """Let `n` decoder steps go, each once the driver waits for it; returns when the next step
        waits (requests submitted now join the step after it) or the driver stopped."""
        await asyncio.sleep(0.005)  # the requests submitted before are queued
        for _ in range(n):
            await wait_until_async(lambda: self.reached > self.released, "a decoder step to wait")
            self.released += 1
            self.permits.release()
        await wait_until_async(
            lambda: self.reached > self.released or not self.scheduler.running,
            "the next step to wait or the driver to stop",
        )

    async def idle(self) -> None:
        """Until the driver has stopped (nothing left to decode) and handed everything back."""
        await wait_until_async(lambda: not self.scheduler.running, "the driver to stop")
        await asyncio.sleep(0.01)  # its last callbacks

    async def go(self) -> None:
        """Let every step go from now on (the requests submitted before are queued first)."""
        await asyncio.sleep(0.005)
        self.free.set()
        self.permits.release(100)


def assert_same(want: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, expected in want.items():
        assert got[name].shape == expected.shape, name
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got[name], expected, atol=1e-6, rtol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], expected, err_msg=name)


def noisy(repository: Path, joins: IterationBatching = EVERY_STEP, **policy: Any) -> Harness:
    """copy-gru deciding by logits seeded from each row's whole history: any mix-up of rows or of
    beam hypotheses changes the answer."""
    _, tgt = translate_vocabs()
    runners = seq2seq_runners(random_policy(len(tgt), seed=7))
    return Harness(pipeline_of(repository, "copy-gru"), runners, joins=joins, **policy)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_requests_join_between_steps_leave_when_done_and_answer_as_alone(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository, max_batch_size=64)
        params = [{}, {"beam_size": 3}, {"max_length": 3}, {}, {"beam_size": 2, "max_length": 5}]
        cases = [(WORDS[i : i + 1 + i % 2], p) for i, p in enumerate(params)]
        first = h.submit(cases[0][0], **cases[0][1])
        await h.step(2)
        second = [h.submit(t, **p) for t, p in cases[1:3]]  # join together
        await h.step(1)
        third = [h.submit(t, **p) for t, p in cases[3:]]
        await h.go()
        done = await asyncio.gather(first, *second, *third)
        for (texts, params), d in zip(cases, done, strict=True):
            assert_same(h.alone(texts, **params), d.outputs)
        await h.idle()
        # one execution per admission: the first alone, then two by two (their encoders ran together)
        assert [(e.requests, e.rows) for e in h.executions] == [(1, 1), (2, 3), (2, 3)]
        assert done[1].execution is done[2].execution and done[0].execution is not done[1].execution
        # rows per step: the first alone (it ends at step 2), then the second pair (2x3 for beam 3, + 1),
        # joined by the third (+ 2 + 2x2 for beam 2) at the step after next; fewer as they leave
        assert h.step_rows[:5] == [1, 1, 7, 7, 11] and h.step_rows[-1] < 7
        first = done[0]  # its encoder call, then every step until its EOS
        assert [c[0] for c in first.calls] == ["encoder"] + ["decoder_step"] * int(first.outputs["output_lengths"][0])
        assert h.scheduler.queued == 0

    run(go())


def test_newcomers_wait_a_few_steps_to_join_together_or_join_when_they_are_many(fake_repository: Path):
    """iteration_batching: a decoding batch admits every max_waiting_steps steps, or sooner when the
    waiting rows reach waiting_served_ratio times its rows; an empty batch admits at once."""

    async def go() -> None:
        joins = IterationBatching(max_waiting_steps=3, waiting_served_ratio=2.0)
        h = Harness(pipeline_of(fake_repository, "copy-gru"), copy_gru().runners, joins=joins)  # upper-cases
        first = h.submit(["hello world"])  # the batch is empty: it joins at once (12 steps)
        await h.step(0)
        late = h.submit(["x"])  # 1 row waiting, 1 decoding: it waits for the third step since the join
        await h.step(3)
        many = h.submit(["ab", "cd", "ef", "gh"])  # 4 rows waiting, 2 decoding: they join at once
        await h.step(1)
        await h.go()
        done = await asyncio.gather(first, late, many)
        for texts, d in zip((["hello world"], ["x"], ["ab", "cd", "ef", "gh"]), done, strict=True):
            assert_same(h.alone(texts), d.outputs)
        await h.idle()
        assert [(e.requests, e.rows) for e in h.executions] == [(1, 1), (1, 1), (1, 4)]
        assert h.step_rows[:6] == [1, 1, 1, 2, 6, 5]  # "x" decodes X and EOS, and leaves

    run(go())


def test_pointer_requests_of_different_lengths_share_the_running_batch(fake_repository: Path):
    async def go() -> None:
        sorter = FAKES["sorter"]()
        h = Harness(pipeline_of(fake_repository, "sorter"), sorter.runners)
        rng = np.random.default_rng(0)
        inputs = [{"values": rng.choice(100, size=(1 + i % 2, 3 + i % 7), replace=False)} for i in range(6)]
        first = h.submit(inputs=inputs[0])
        await h.step(1)
        rest = [h.submit(inputs=x) for x in inputs[1:]]
        await h.go()
        done = await asyncio.gather(first, *rest)
        for x, d in zip(inputs, done, strict=True):
            assert_same(h.pipeline.run(x, {}, h.runners), d.outputs)
        # the newcomers joined the first as far as max_batch_size (8 rows) let them; the last once it left
        assert [e.rows for e in h.executions] == [1, 6, 2] and max(h.step_rows) == 8

    run(go())


def test_a_request_at_an_idle_model_starts_at_once_and_the_driver_stops_when_idle(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository)
        await h.go()
        for text in (["ab-1"], ["zz"]):
            done = await h.submit(text)
            assert_same(h.alone(text), done.outputs)
            await h.idle()  # nothing left to decode: no driver thread waits
        assert [(e.requests, e.rows) for e in h.executions] == [(1, 1), (1, 1)]

    run(go())


def test_a_lone_request_decodes_on_the_loop_with_the_same_answer_and_records(fake_repository: Path):
    async def go() -> None:
        h = Harness(pipeline_of(fake_repository, "copy-gru"), copy_gru().runners, inline=True)
        await h.go()
        loop_thread = threading.get_ident()
        done = await h.submit(["hello"])
        assert_same(h.alone(["hello"]), done.outputs)
        assert set(h.threads) == {loop_thread} and len(h.threads) == 6  # H E L L O, EOS
        await asyncio.sleep(0.01)
        assert [(e.requests, e.rows) for e in h.executions] == [(1, 1)] and h.step_rows == [1] * 6
        h.threads.clear()
        await h.submit(["ab", "cd"])  # two items: a worker thread
        assert loop_thread not in h.threads
        h.threads.clear()
        await h.submit(["ab"], on_step=lambda ids, attn: None)  # streaming: the driver, in a thread
        assert loop_thread not in h.threads

    run(go())


def test_a_cancelled_request_leaves_the_batch_before_the_next_step(fake_repository: Path):
    async def go() -> None:
        h = Harness(pipeline_of(fake_repository, "copy-gru"), copy_gru().runners)  # upper-cases: 12 steps
        gone, kept = h.submit(["hello world"]), h.submit(["stepwise", "x"])
        await h.step(2)
        gone.cancel()
        await asyncio.sleep(0.01)
        await h.go()
        done = await kept
        assert_same(h.alone(["stepwise", "x"]), done.outputs)
        with pytest.raises(asyncio.CancelledError):
            await gone
        await h.idle()
        # the first step went before `kept` arrived; the third had begun when the caller left (the test
        # holds it inside the decoder call), so its row left at the fourth
        assert h.step_rows[:4] == [1, 3, 3, 2]

    run(go())


def test_a_waiting_request_whose_deadline_passes_never_joins(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository, max_batch_size=2)
        busy = h.submit(["hello world", "ab-1"])  # fills the batch: 2 rows
        await h.step(1)
        now = asyncio.get_running_loop().time()
        late, kept = h.submit(["x"], deadline=now + 0.02), h.submit(["zz"], deadline=now + 60)
        with pytest.raises(DeadlineExceeded, match="deadline passed while it waited in the queue"):
            await late
        assert h.scheduler.queued == 1
        with pytest.raises(DeadlineExceeded, match="before it was queued"):
            await h.submit(["zz"], deadline=now - 1)
        await h.go()
        await busy
        assert_same(h.alone(["zz"]), (await kept).outputs)
        await h.idle()
        assert [e.requests for e in h.executions] == [1, 1]  # the late one was never encoded

    run(go())


def test_a_full_queue_refuses_at_once_naming_the_limit(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository, max_batch_size=2, max_queue_size=1)
        busy = h.submit(["hello world", "ab-1"])
        await h.step(1)
        waiting = h.submit(["x"])
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match=r"has 1 requests queued, its max_queue_size \(1\)"):
            await h.submit(["zz"])
        await h.go()
        await asyncio.gather(busy, waiting)

    run(go())


def test_a_beam_request_brings_k_rows_and_one_larger_than_the_batch_joins_it_empty(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository, max_batch_size=4)
        big = h.submit(["ab-1", "zz"], beam_size=3)  # 6 rows > 4: runs, alone
        small = h.submit(["x"])
        await h.step(2)
        assert h.scheduler.queued == 1  # it waits for room
        await h.go()
        done = await asyncio.gather(big, small)
        assert_same(h.alone(["ab-1", "zz"], beam_size=3), done[0].outputs)
        assert_same(h.alone(["x"]), done[1].outputs)
        assert h.step_rows[:2] == [6, 6] and set(h.step_rows[2:]) <= {1, 6}

    run(go())


def test_a_failed_step_fails_the_batch_and_the_next_request_runs(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository)
        tasks = [h.submit(["ab-1"]), h.submit(["zz"])]
        await h.step(1)
        h.fail = True
        await h.step(1)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, BackendFailure) for r in results)
        h.fail = False
        await h.go()
        assert_same(h.alone(["x"]), (await h.submit(["x"])).outputs)

    run(go())


def test_a_failed_encoder_fails_its_newcomers_only(fake_repository: Path):
    async def go() -> None:
        h = Harness(pipeline_of(fake_repository, "copy-gru"), copy_gru().runners)
        running = h.submit(["hello"])
        await h.step(1)
        h.fail_encoder = True
        newcomers = [h.submit(["ab"]), h.submit(["cd"])]
        await h.step(1)
        h.fail_encoder = False
        await h.go()
        assert all(isinstance(r, BackendFailure) for r in await asyncio.gather(*newcomers, return_exceptions=True))
        assert_same(h.alone(["hello"]), (await running).outputs)
        assert [e.requests for e in h.executions] == [1]  # a failed admission is no execution

    run(go())


def test_a_greedy_request_streams_each_step_and_a_beam_request_does_not(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository)
        await h.go()
        loop_thread = threading.get_ident()
        steps: list[tuple[np.ndarray, np.ndarray]] = []

        def on_step(ids: np.ndarray, attn: np.ndarray) -> None:
            assert threading.get_ident() == loop_thread
            steps.append((ids, attn))

        texts = ["hello world", "ab-1"]
        done = await h.submit(texts, on_step=on_step)
        n = int(done.outputs["output_lengths"].max())
        assert [ids.shape for ids, _ in steps] == [(2, t) for t in range(1, n + 1)]
        assert all(np.array_equal(ids, steps[-1][0][:, : ids.shape[1]]) for ids, _ in steps)  # ids grow
        # the last step's ids and every step's attention row make the answer
        streamed = np.stack([attn for _, attn in steps], axis=1)  # [n, T, S]
        prepared = h.pipeline.prepare({"text": bytes_tensor(texts)}, {})
        assert_same(done.outputs, h.pipeline.answer(prepared, steps[-1][0], streamed))  # type: ignore[attr-defined]
        steps.clear()
        await h.submit(texts, on_step=on_step, beam_size=2)
        assert steps == []

    run(go())


# --- config.yaml and the data plane ----------------------------------------------------------


def test_decode_batching_is_read_from_config_yaml_and_refused_where_it_cannot_work(monkeypatch):
    raw = copy_gru().config.model_dump()
    assert ModelConfig.model_validate(raw).decode_batching == "request"
    assert ModelConfig.model_validate(raw).iteration_batching == IterationBatching(max_waiting_steps=4)
    joins = {"max_waiting_steps": 2, "waiting_served_ratio": 0.5}
    assert ModelConfig.model_validate({**raw, "iteration_batching": joins}).iteration_batching.max_waiting_steps == 2
    with pytest.raises(ValidationError, match="max_waiting_steps"):
        ModelConfig.model_validate({**raw, "iteration_batching": {"max_waiting_steps": 0}})
    assert ModelConfig.model_validate({**raw, "decode_batching": "iteration"}).decode_batching == "iteration"
    with pytest.raises(ValidationError, match="Input should be 'iteration' or 'request'"):
        ModelConfig.model_validate({**raw, "decode_batching": "step"})
    classifier = FAKES["keywords"]().config.model_dump()
    with pytest.raises(ValidationError, match=r"decode_batching 'iteration' needs an encoder \+ decoder_step model"):
        ModelConfig.model_validate({**classifier, "decode_batching": "iteration"})
    monkeypatch.setattr("runtime.config.supports", lambda loop: False)  # e.g. a KV cache without positions
    with pytest.raises(ValidationError, match=r"cannot share a batch across requests.*use 'request'"):
        ModelConfig.model_validate({**raw, "decode_batching": "iteration"})


@pytest.fixture
def iteration_plane(tmp_path: Path) -> Iterator[tuple[DataPlane, StatsRegistry, CollectorRegistry]]:
    root = tmp_path / "repository"
    write_model(root, copy_gru(), decode_batching="iteration", dynamic_batching={"max_queue_size": 4})
    repository = ModelRepository(root, BackendPool())
    repository.load_all()
    executor = ThreadPoolExecutor(max_workers=2)
    stats, registry = StatsRegistry(), CollectorRegistry()
    yield DataPlane(repository, executor, stats, ServingMetrics(registry)), stats, registry
    executor.shutdown(wait=True)
    repository.close()


def test_the_data_plane_decodes_iteration_level_and_records_executions_and_step_rows(iteration_plane):
    dataplane, stats, registry = iteration_plane
    labels = {"model": "copy-gru", "version": "1", "attention": "other", "backend": "numpy", "device": "cpu"}
    streamed: list[tuple[bytes, bool]] = []

    async def stream() -> None:  # one part per decoder step, through the iteration scheduler's callback
        async for part in dataplane.infer_stream("copy-gru", "", {"text": bytes_tensor(["de"])}, {}):
            streamed.append((part.outputs["text"][0], part.final))

    async def go() -> list[Any]:
        scheduler = dataplane.schedulers.get(dataplane.repository.get("copy-gru"), "numpy")
        assert isinstance(scheduler, IterationScheduler)
        calls = [dataplane.infer("copy-gru", "", {"text": bytes_tensor([w])}, {}) for w in ("abc", "hello", "x")]
        results = await asyncio.gather(*calls, stream())
        await asyncio.sleep(0.05)  # the metrics are the loop's later callbacks
        return results[:3]

    results = asyncio.run(go())
    assert [r.outputs["text"][0] for r in results] == [b"ABC", b"HELLO", b"X"]
    assert streamed == [(b"D", False), (b"E", False), (b"", True)]  # D, E, EOS
    s = stats.snapshot()[("copy-gru", 1)]
    assert s.success.count == 4 and s.inference_count == 4 and 1 <= s.execution_count <= 4
    sample = lambda name, **extra: registry.get_sample_value(name, {**labels, **extra}) or 0.0  # noqa: E731
    assert sample("attnserve_batch_size_sum") == 4 and sample("attnserve_batch_size_count") == s.execution_count
    steps = sample("attnserve_decode_step_rows_count")
    assert steps == sample("attnserve_compute_duration_seconds_count", stage="decode_step") >= 6  # "hello" + EOS
    assert sample("attnserve_decode_step_rows_sum") == 4 + 6 + 2 + 3  # each request's rows, one per step
    assert sample("attnserve_decode_steps_count") == 0  # a request-level batch's steps: none here


def test_drain_refuses_the_requests_waiting_to_join_and_the_batch_decodes_on(fake_repository: Path):
    async def go() -> None:
        h = noisy(fake_repository, max_batch_size=2)
        busy = h.submit(["hello world", "ab-1"])  # fills the batch: 2 rows
        await h.step(1)
        waiting = [h.submit(["x"], deadline=asyncio.get_running_loop().time() + 60), h.submit(["zz"])]
        await asyncio.sleep(0.01)
        h.scheduler.drain(ModelUnavailable("model 'fake' version 1: the server is shutting down"))
        assert h.scheduler.queued == 0
        await h.go()
        assert_same(h.alone(["hello world", "ab-1"]), (await busy).outputs)
        for task in waiting:
            with pytest.raises(ModelUnavailable, match="shutting down"):
                await task
        await h.idle()
        assert [e.requests for e in h.executions] == [1]  # the drained requests were never encoded
        assert_same(h.alone(["zz"]), (await h.submit(["zz"])).outputs)  # later requests are served

    run(go())
