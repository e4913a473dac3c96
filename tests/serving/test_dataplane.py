"""The transport-neutral request path (serving/dataplane.py) over the fake models, without gRPC:
outputs, the errors a request can meet, where the pipeline runs, and what the request leaves in
the Prometheus registry and the Triton statistics."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from runtime.errors import BackendFailure, InvalidInput, ModelNotFound, ModelUnavailable
from runtime.pipelines.base import bytes_tensor
from serving.dataplane import DataPlane, InferResult
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.stats import ModelStats, StatsRegistry
from tests.helpers.fakes import BackendPool, NumpyBackend, copy_gru, write_model, write_repository

WORKER = "dataplane-test-worker"
# the fakes' attention "fake" is no registered variant: its label is "other" (runtime.variants)
GRU = {"model": "copy-gru", "version": "1", "attention": "other", "backend": "numpy", "device": "cpu"}


@dataclass
class Plane:
    """A DataPlane over a repository of fakes, with the stats and metrics registry it reports to."""

    dataplane: DataPlane
    repository: ModelRepository
    stats: StatsRegistry
    registry: CollectorRegistry

    def infer(
        self,
        name: str,
        inputs: Mapping[str, np.ndarray],
        params: Mapping[str, Any] | None = None,
        requested: Sequence[str] = (),
        version: str = "",
    ) -> InferResult:
        """One request on a fresh event loop; returns once the request's bookkeeping has run too."""

        async def call() -> InferResult:
            result = await self.dataplane.infer(name, version, inputs, params or {}, requested)
            await asyncio.sleep(0)  # the data plane books a success as the loop's next callback
            return result

        return asyncio.run(call())

    def sample(self, metric: str, **labels: str) -> float:
        return self.registry.get_sample_value(metric, labels) or 0.0

    def requests(self, code: str, **labels: str) -> float:
        return self.sample("attnserve_requests_total", **{**GRU, **labels, "code": code})

    def stats_of(self, model: str, version: int = 1) -> ModelStats:
        return self.stats.snapshot()[(model, version)]

    def backend(self, model: str, component: str, backend: str = "numpy") -> NumpyBackend:
        loaded = self.repository.get(model).backends[backend][component]
        assert isinstance(loaded, NumpyBackend)
        return loaded


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "repository")


@pytest.fixture
def make_plane(root: Path) -> Iterator[Callable[..., Plane]]:
    """Builds the data plane the way serving/app.py does (the one place to change with its constructor)."""
    executors: list[ThreadPoolExecutor] = []

    def make(inline_when_idle: bool = True) -> Plane:
        repository = ModelRepository(root, BackendPool())
        repository.load_all()
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix=WORKER)
        executors.append(executor)
        stats, registry = StatsRegistry(), CollectorRegistry()
        dataplane = DataPlane(repository, executor, stats, ServingMetrics(registry), inline_when_idle)
        return Plane(dataplane, repository, stats, registry)

    yield make
    for executor in executors:
        executor.shutdown(wait=True)


@pytest.fixture
def plane(make_plane: Callable[..., Plane]) -> Plane:
    return make_plane()


def text(*items: str) -> dict[str, np.ndarray]:
    return {"text": bytes_tensor(list(items))}


def test_a_good_request(plane: Plane):
    result = plane.infer("copy-gru", text("hello", "ab"))
    assert result.backend == "numpy" and result.model.version == 1 and result.model.config.name == "copy-gru"
    assert list(result.outputs) == ["text", "attention", "output_lengths", "input_lengths"]
    assert result.outputs["text"].tolist() == [b"HELLO", b"AB"]
    assert result.outputs["attention"].shape == (2, 6, 5)


@pytest.mark.parametrize(
    ("model", "inputs", "output", "expected"),
    [
        ("copy-transformer", text("abc"), "text", [b"ABC"]),
        ("sorter", {"values": np.array([[42, 7, 93, 15]])}, "order", [[1, 3, 0, 2]]),
        ("keywords", text("A network. The library. A library."), "label", [b"libs"]),
    ],
)
def test_every_task(plane: Plane, model: str, inputs: dict, output: str, expected: list):
    assert plane.infer(model, inputs).outputs[output].tolist() == expected


def test_requested_outputs_only(plane: Plane):
    full = plane.infer("copy-gru", text("abc")).outputs
    some = plane.infer("copy-gru", text("abc"), requested=["attention", "text"]).outputs
    assert list(some) == ["attention", "text"]
    for name in some:
        np.testing.assert_array_equal(some[name], full[name])


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (["text", "alignment"], "model 'copy-gru' has no output(s) ['alignment']; "
                                "it offers ['text', 'attention', 'output_lengths', 'input_lengths']"),
        (["text", "text"], "output(s) requested twice: ['text', 'text']"),
    ],
)  # fmt: skip
def test_unknown_and_duplicate_outputs_are_refused(plane: Plane, requested: list[str], message: str):
    with pytest.raises(InvalidInput) as err:
        plane.infer("copy-gru", text("abc"), requested=requested)
    assert err.value.message == message
    assert plane.requests("INVALID_ARGUMENT") == 1 and plane.requests("OK") == 0


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("tensorrt", "unknown backend 'tensorrt' for model 'copy-gru'; it runs on ['numpy']"),
        (3, "parameter 'backend' must be a string, got 3"),
    ],
)
def test_an_unknown_backend_is_refused(plane: Plane, backend: Any, message: str):
    with pytest.raises(InvalidInput) as err:
        plane.infer("copy-gru", text("abc"), params={"backend": backend})
    assert err.value.message == message
    # counted under the model's current version, no backend: a client's string never becomes a label value
    assert plane.requests("INVALID_ARGUMENT", backend="") == 1
    assert plane.stats_of("copy-gru").fail.count == 1


def test_the_backend_is_chosen_per_request(root: Path, make_plane: Callable[..., Plane]):
    write_model(root, copy_gru(), backends=[{"name": "numpy"}, {"name": "numpy-twin"}])
    plane = make_plane()
    result = plane.infer("copy-gru", text("abc"), params={"backend": "numpy-twin"})
    assert result.backend == "numpy-twin" and result.outputs["text"].tolist() == [b"ABC"]
    assert plane.backend("copy-gru", "encoder", "numpy-twin").threads  # the twin ran, the default did not
    assert not plane.backend("copy-gru", "encoder").threads
    assert plane.requests("OK", backend="numpy-twin") == 1 and plane.requests("OK") == 0


def test_unknown_models_and_versions(plane: Plane):
    with pytest.raises(ModelNotFound) as err:
        plane.infer("nope", text("abc"))
    assert err.value.message == "unknown model 'nope'; ask RepositoryIndex for the list"
    empty = dict.fromkeys(GRU, "")
    assert plane.requests("NOT_FOUND", **empty) == 1  # model="": client input never creates series
    with pytest.raises(ModelNotFound) as err:
        plane.infer("copy-gru", text("abc"), version="7")
    assert err.value.message == "model 'copy-gru' has no version '7'; serving [1]"
    assert plane.requests("NOT_FOUND", backend="") == 1  # under the current version, never the client's "7"
    with pytest.raises(ModelNotFound, match="model 'copy-gru' has no version '²'"):
        plane.infer("copy-gru", text("abc"), version="²")  # a digit to str.isdigit(), not to int()
    assert plane.requests("NOT_FOUND", backend="") == 2
    assert plane.infer("copy-gru", text("abc"), version="1").outputs["text"].tolist() == [b"ABC"]


def test_an_unloaded_model_is_unavailable(plane: Plane):
    plane.repository.unload("sorter")
    with pytest.raises(ModelUnavailable, match="model 'sorter' is not ready: unloaded"):
        plane.infer("sorter", {"values": np.array([[2, 1]])})


def test_a_good_request_is_in_the_metrics_and_the_statistics(plane: Plane):
    plane.infer("copy-gru", text("abc", "de"))  # 4 decoder steps: A, B, C, EOS
    assert plane.requests("OK") == 1
    assert plane.sample("attnserve_request_duration_seconds_count", **GRU) == 1
    assert plane.sample("attnserve_queue_duration_seconds_count", **GRU) == 1
    assert plane.sample("attnserve_batch_size_sum", **GRU) == 2
    assert plane.sample("attnserve_decode_steps_sum", **GRU) == 4
    assert plane.sample("attnserve_compute_duration_seconds_count", **GRU, stage="encode") == 1
    assert plane.sample("attnserve_compute_duration_seconds_count", **GRU, stage="decode_step") == 4
    assert plane.sample("attnserve_inflight_requests", model="copy-gru") == 0
    stats = plane.stats_of("copy-gru")
    assert (stats.success.count, stats.fail.count) == (1, 0)
    assert (stats.inference_count, stats.execution_count) == (2, 1)
    assert stats.compute_infer.count == 1 and list(stats.batch_sizes) == [2]
    assert stats.success.ns >= stats.compute_infer.ns > 0


def test_a_request_the_pipeline_refuses_is_counted_as_a_failure(plane: Plane):
    with pytest.raises(InvalidInput, match="beam_size must be between 1 and 16, got 0"):
        plane.infer("copy-gru", text("abc"), params={"beam_size": 0})
    assert plane.requests("INVALID_ARGUMENT") == 1 and plane.requests("OK") == 0
    assert plane.sample("attnserve_request_failures_total", model="copy-gru", code="INVALID_ARGUMENT") == 1
    stats = plane.stats_of("copy-gru")
    assert (stats.success.count, stats.fail.count, stats.inference_count) == (0, 1, 0)


def test_a_failing_backend_is_counted_as_internal(root: Path, make_plane: Callable[..., Plane]):
    write_model(root, copy_gru(), backends=[{"name": "numpy", "options": {"fail": True}}])
    plane = make_plane()
    with pytest.raises(BackendFailure, match="component 'encoder' told to fail"):
        plane.infer("copy-gru", text("abc", "de"))  # batch 2: raised in a worker thread
    assert plane.requests("INTERNAL") == 1
    assert plane.stats_of("copy-gru").fail.count == 1


def test_a_single_item_runs_on_the_loop_when_nothing_else_computes(plane: Plane):
    plane.infer("copy-gru", text("abc"))
    assert plane.backend("copy-gru", "encoder").threads == [threading.current_thread().name]


def test_a_batch_runs_in_a_worker_thread(plane: Plane):
    plane.infer("copy-gru", text("abc", "de"))
    threads = plane.backend("copy-gru", "encoder").threads
    assert len(threads) == 1 and threads[0].startswith(WORKER)
    assert plane.stats_of("copy-gru").success.count == 1


def test_without_inline_when_idle_a_single_item_runs_in_a_worker_thread(make_plane: Callable[..., Plane]):
    plane = make_plane(inline_when_idle=False)
    assert plane.infer("sorter", {"values": np.array([[3, 1, 2]])}).outputs["order"].tolist() == [[1, 2, 0]]
    assert plane.backend("sorter", "encoder").threads[0].startswith(WORKER)


def test_a_single_item_arriving_while_another_request_computes_goes_to_a_worker(plane: Plane):
    encoder = plane.backend("copy-gru", "encoder")
    computing, release = threading.Event(), threading.Event()

    def hold_batches(inputs: Mapping[str, np.ndarray]) -> None:
        if len(inputs["src_ids"]) > 1:
            computing.set()
            assert release.wait(30)

    encoder.before = hold_batches

    async def two_requests() -> tuple[InferResult, InferResult, float]:
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(plane.dataplane.infer("copy-gru", "", text("abc", "de"), {}))
        try:
            assert await loop.run_in_executor(None, computing.wait, 30)
            inflight = plane.sample("attnserve_inflight_requests", model="copy-gru")
            second = await plane.dataplane.infer("copy-gru", "", text("xy"), {})
        finally:
            release.set()
        return await first, second, inflight

    first, second, inflight = asyncio.run(two_requests())
    assert inflight == 1
    assert first.outputs["text"].tolist() == [b"ABC", b"DE"] and second.outputs["text"].tolist() == [b"XY"]
    assert [t.startswith(WORKER) for t in encoder.threads] == [True, True]
    assert plane.stats_of("copy-gru").success.count == 2 and plane.requests("OK") == 2


def stream(plane: Plane, name: str, inputs: Mapping[str, np.ndarray], **params: Any) -> list[InferResult]:
    """One streamed request on a fresh event loop: its parts, once its bookkeeping has run too."""

    async def call() -> list[InferResult]:
        parts = [part async for part in plane.dataplane.infer_stream(name, "", inputs, params)]
        await asyncio.sleep(0)
        return parts

    return asyncio.run(call())


def test_a_streamed_translation_comes_a_token_at_a_time_and_counts_once(plane: Plane):
    answer = plane.infer("copy-gru", text("abc", "de")).outputs
    parts = stream(plane, "copy-gru", text("abc", "de"))  # 4 steps: A, B, C, EOS
    assert [p.final for p in parts] == [False, False, False, True]
    assert [p.outputs["text"].tolist() for p in parts] == [[b"A", b"D"], [b"B", b"E"], [b"C", b""], [b"", b""]]
    attention = np.concatenate([p.outputs["attention"] for p in parts], axis=1)
    np.testing.assert_array_equal(attention, answer["attention"])
    assert plane.backend("copy-gru", "decoder_step").threads[-1].startswith(WORKER)  # never on the loop
    assert plane.requests("OK") == 2  # the unary request and the streamed one
    stats = plane.stats_of("copy-gru")
    assert (stats.success.count, stats.inference_count, stats.execution_count) == (2, 4, 2)


@pytest.mark.parametrize(
    ("model", "inputs", "params"),
    [("copy-gru", text("abc"), {"beam_size": 2}), ("sorter", {"values": np.array([[42, 7, 93, 15]])}, {})],
)
def test_what_cannot_stream_comes_whole_in_one_final_part(plane: Plane, model: str, inputs: dict, params: dict):
    answer = plane.infer(model, inputs, params).outputs
    (part,) = stream(plane, model, inputs, **params)
    assert part.final and part.outputs.keys() == answer.keys()
    for name, array in answer.items():
        np.testing.assert_array_equal(part.outputs[name], array)


def test_closing_a_stream_stops_its_decode_at_the_next_step(plane: Plane):
    worker = ThreadPoolExecutor(max_workers=1)  # one thread: a call queued after the batch runs once it ended
    plane.dataplane.executor = worker  # before the model's scheduler is made (on its first request)
    decoder = plane.backend("copy-gru", "decoder_step")
    blocked, release = threading.Event(), threading.Event()
    calls = 0

    def hold_the_second_step(inputs: Mapping[str, np.ndarray]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            blocked.set()
            assert release.wait(30)

    decoder.before = hold_the_second_step

    async def call() -> InferResult:
        parts = plane.dataplane.infer_stream("copy-gru", "", text("abcdefgh"), {})
        first = await anext(parts)
        assert await asyncio.to_thread(blocked.wait, 30)
        await parts.aclose()  # the client went away while step 2 computes
        for _ in range(10):  # the request's cancellation reaches the scheduler
            await asyncio.sleep(0)
        release.set()
        await asyncio.wrap_future(worker.submit(lambda: None))  # the batch has ended
        return first

    first = asyncio.run(call())
    worker.shutdown()
    assert first.outputs["text"].tolist() == [b"A"] and not first.final
    assert calls == 2  # of 9 steps: the batch stopped before step 3
    assert plane.requests("CANCELLED") == 1 and plane.stats_of("copy-gru").fail.count == 1
