"""The scheduler alone: batch formation, admission, deadlines and cancellation (a numpy pipeline
whose executions the test holds and releases, so every queue state is reached deterministically)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from runtime.config import ModelConfig
from runtime.errors import BackendFailure, DeadlineExceeded, ModelUnavailable, QueueFull
from runtime.pipelines.base import Outputs, Pipeline, Prepared, Runners, T
from serving.scheduler import Execution, Policy, Scheduler
from serving.scheduler.inline import PROBE_EVERY, PROBE_LEN, QUIET_TO_INLINE, InlineGate
from tests.helpers.fakes import copy_gru
from tests.helpers.wait import wait_until_async


class Gated(Pipeline):
    """y = 2x; each execution is recorded, waits for the test to let it proceed, then makes one
    component call."""

    task = "toy"
    inputs = (T("x", "int64", "batch"),)
    outputs = (T("y", "int64", "batch"),)

    def __init__(self) -> None:  # no model files
        self.batches: list[list[int]] = []  # values of each executed batch
        self.permits = threading.Semaphore(0)  # one per execution allowed to proceed
        self.free = False  # every execution proceeds
        self.started = threading.Event()
        self.fail = False

    def open(self) -> None:
        """Let one held execution proceed."""
        self.permits.release()

    def open_all(self) -> None:
        self.free = True
        self.permits.release(8)  # the executions already waiting

    @classmethod
    def answers(cls, outputs: Mapping[str, np.ndarray]) -> list[Any]:
        return list(outputs["y"])

    def prepare(self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Prepared:
        x = np.asarray(inputs["x"])
        return Prepared(rows=len(x), key=params.get("key", 0), data=x)

    def execute(self, batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
        self.batches.append([int(v) for p in batch for v in p.data])
        self.started.set()
        assert self.free or self.permits.acquire(timeout=10)
        if self.fail:
            raise BackendFailure("component failed")
        runners["step"]({})
        return [{"y": p.data * 2} for p in batch]


class Harness:
    def __init__(self, policy: Policy, inline: bool = False) -> None:
        self.pipeline = Gated()
        self.executions: list[Execution] = []
        self.executor = ThreadPoolExecutor(4)
        self.steps = 0  # component calls made
        self.scheduler = Scheduler(
            "model 'toy' version 1", self.pipeline, lambda calls: {"step": self.step}, policy, self.executor,
            self.executions.append, lambda: inline,
        )  # fmt: skip

    def step(self, feeds: dict) -> dict:
        self.steps += 1
        return feeds

    def submit(self, *values: int, deadline: float | None = None, **params: Any) -> asyncio.Task:
        prepared = self.pipeline.prepare({"x": np.array(values, dtype=np.int64)}, params)
        return asyncio.ensure_future(self.scheduler.submit(prepared, deadline))

    async def busy(self) -> asyncio.Task:
        """Submit one request and wait until it computes (held until the test lets it proceed)."""
        task = self.submit(100)
        await wait_until_async(self.pipeline.started.is_set, "the request to start computing")
        return task

    async def release(self, *tasks: asyncio.Task) -> list[Any]:
        self.pipeline.open_all()
        return await asyncio.gather(*tasks, return_exceptions=True)


BATCHING = Policy(max_batch_size=8, batching=True, concurrency=1)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_an_idle_model_runs_a_request_at_once_and_queued_ones_run_as_one_batch():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        queued = [h.submit(i) for i in range(5)]
        await asyncio.sleep(0.01)
        assert h.scheduler.queued == 5 and h.pipeline.batches == [[100]]
        done = await h.release(first, *queued)
        assert [int(d.outputs["y"][0]) for d in done] == [200, 0, 2, 4, 6, 8]
        assert h.pipeline.batches == [[100], [0, 1, 2, 3, 4]]
        await asyncio.sleep(0)  # executions are recorded as the loop's next callback
        assert [(e.rows, e.requests) for e in h.executions] == [(1, 1), (5, 5)]
        assert done[1].execution is done[5].execution  # one shared batch
        assert all(d.started_ns >= d.queued_ns for d in done)

    run(go())


def test_only_requests_of_one_key_share_a_batch_and_a_batch_holds_at_most_max_batch_size_items():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        tasks = [h.submit(1, 2, 3), h.submit(4, key=1), h.submit(5, 6, 7, 8), h.submit(9, 10)]
        await asyncio.sleep(0.01)
        await h.release(first, *tasks)
        # oldest first: key 0 takes 3 + 4 items (the 2 more would pass 8), then key 1, then the rest
        assert h.pipeline.batches == [[100], [1, 2, 3, 5, 6, 7, 8], [4], [9, 10]]

    run(go())


def test_preferred_batch_sizes_cut_the_queue():
    async def go() -> None:
        h = Harness(Policy(max_batch_size=8, batching=True, concurrency=1, preferred=(2,)))
        first = await h.busy()
        tasks = [h.submit(i) for i in range(5)]
        await asyncio.sleep(0.01)
        await h.release(first, *tasks)
        assert h.pipeline.batches == [[100], [0, 1], [2, 3], [4]]

    run(go())


def test_max_queue_delay_waits_for_company_when_the_model_is_idle():
    async def go() -> None:
        h = Harness(Policy(max_batch_size=8, batching=True, concurrency=1, max_queue_delay_s=0.2))
        h.pipeline.open_all()
        results = await asyncio.gather(h.submit(1), h.submit(2))
        assert h.pipeline.batches == [[1, 2]] and [int(r.outputs["y"][0]) for r in results] == [2, 4]

    run(go())


def test_without_batching_requests_run_alone_and_concurrently():
    async def go() -> None:
        h = Harness(Policy(max_batch_size=8, batching=False, concurrency=2))
        tasks = [h.submit(i) for i in range(3)]
        await wait_until_async(lambda: len(h.pipeline.batches) == 2, "the executor's threads to start two requests")
        await asyncio.sleep(0.01)  # a third would have started by now if it could
        assert len(h.pipeline.batches) == 2 and h.scheduler.queued == 1  # two run at once
        await h.release(*tasks)
        assert sorted(map(tuple, h.pipeline.batches)) == [(0,), (1,), (2,)]

    run(go())


def test_a_full_queue_refuses_at_once_naming_the_limit():
    async def go() -> None:
        h = Harness(Policy(max_batch_size=8, batching=True, concurrency=1, max_queue_size=2))
        first = await h.busy()
        queued = [h.submit(1), h.submit(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull, match=r"model 'toy' version 1 has 2 requests queued, its max_queue_size \(2\)"):
            await h.submit(3)
        await h.release(first, *queued)
        assert h.pipeline.batches == [[100], [1, 2]]

    run(go())


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_unrun():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        now = asyncio.get_running_loop().time()
        late = h.submit(1, deadline=now + 0.02)
        kept = h.submit(2, deadline=now + 60)
        with pytest.raises(DeadlineExceeded, match="deadline passed while it waited in the queue"):
            await late
        assert h.scheduler.queued == 1
        await h.release(first, kept)
        assert h.pipeline.batches == [[100], [2]]
        with pytest.raises(DeadlineExceeded, match="before it was queued"):
            await h.submit(3, deadline=now - 1)

    run(go())


def test_the_deadline_is_the_earliest_of_the_client_deadline_and_the_timeout():
    scheduler = Harness(Policy(max_batch_size=8, batching=True, concurrency=1, default_timeout_s=2.0)).scheduler
    assert scheduler.deadline(None, None, now=10.0) == 12.0  # the model's default timeout
    assert scheduler.deadline(None, 500_000, now=10.0) == 10.5  # the request's `timeout` (microseconds)
    assert scheduler.deadline(10.1, 500_000, now=10.0) == 10.1  # the client's deadline comes first
    assert Harness(BATCHING).scheduler.deadline(None, None, now=10.0) is None


def test_a_cancelled_request_leaves_the_queue_and_is_never_computed():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        gone, kept = h.submit(1), h.submit(2)
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert h.scheduler.queued == 1
        await h.release(first, kept)
        assert gone.cancelled() and h.pipeline.batches == [[100], [2]]

    run(go())


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_runs():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        tasks = [h.submit(1), h.submit(2)]
        await asyncio.sleep(0.01)
        h.pipeline.fail = True
        results = await h.release(first, *tasks)
        assert all(isinstance(r, BackendFailure) for r in results)
        h.pipeline.fail = False
        assert int((await h.submit(3)).outputs["y"][0]) == 6
        await asyncio.sleep(0)
        assert [e.rows for e in h.executions] == [1]  # failed batches are not counted as executions

    run(go())


def test_a_lone_request_runs_on_the_loop_but_probes_run_in_a_thread():
    async def go() -> None:
        h = Harness(BATCHING, inline=True)
        h.pipeline.open_all()
        loop_thread = threading.get_ident()
        threads: list[int] = []
        original = h.pipeline.execute

        def execute(batch: Sequence[Prepared], runners: Runners) -> list[Outputs]:
            threads.append(threading.get_ident())
            return original(batch, runners)

        h.pipeline.execute = execute  # type: ignore[method-assign]
        for i in range(PROBE_EVERY + PROBE_LEN):
            await h.submit(i)
        # sequential lone requests: on the loop, but for one probe of PROBE_LEN in a thread
        on_loop = [t == loop_thread for t in threads]
        assert on_loop == [True] * (PROBE_EVERY - 1) + [False] * PROBE_LEN + [True]

    run(go())


def test_the_inline_gate_closes_on_company_and_opens_after_a_quiet_spell():
    gate = InlineGate()
    assert gate.allow()
    gate.observed(company=True)  # e.g. a probe saw another request arrive
    assert not gate.allow()
    for _ in range(QUIET_TO_INLINE - 1):
        gate.observed(company=False)
    assert not gate.allow()
    gate.observed(company=False)
    assert gate.allow()
    gate.observed(company=True)
    assert not gate.open


def test_the_policy_comes_from_config_yaml_with_triton_names():
    raw = {**copy_gru().config.model_dump(), "max_batch_size": 64}
    raw["dynamic_batching"] = {
        "max_queue_delay_microseconds": 500, "preferred_batch_size": [16, 4],
        "max_queue_size": 8, "default_timeout_microseconds": 2_000_000,
    }  # fmt: skip
    policy = Policy.of(ModelConfig.model_validate(raw), workers=4)
    assert policy == Policy(
        max_batch_size=64, batching=True, concurrency=1, max_queue_delay_s=0.0005, preferred=(4, 16),
        max_queue_size=8, default_timeout_s=2.0,
    )  # fmt: skip
    raw["dynamic_batching"] = None
    assert Policy.of(ModelConfig.model_validate(raw), workers=4) == Policy(64, batching=False, concurrency=4)
    raw["dynamic_batching"] = {"preferred_batch_size": [128]}
    with pytest.raises(ValidationError, match=r"preferred_batch_size \[128\] exceeds max_batch_size 64"):
        ModelConfig.model_validate(raw)
    raw["dynamic_batching"] = {"max_queue_delay": 100}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ModelConfig.model_validate(raw)


def test_a_computing_batch_stops_at_its_next_component_call_once_all_its_callers_left():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        first.cancel()
        await asyncio.sleep(0.01)
        h.pipeline.open_all()
        assert int((await h.submit(3)).outputs["y"][0]) == 6  # the next request runs as usual
        await asyncio.sleep(0)
        assert h.pipeline.batches == [[100], [3]] and h.steps == 1  # the abandoned batch made no call
        assert [e.rows for e in h.executions] == [1]

    run(go())


def test_a_computing_batch_goes_on_while_one_of_its_callers_waits():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        gone, kept = h.submit(1), h.submit(2)
        await asyncio.sleep(0.01)
        h.pipeline.started.clear()
        h.pipeline.open()
        await first
        await wait_until_async(h.pipeline.started.is_set, "the second batch to start computing")
        assert h.pipeline.batches == [[100], [1, 2]]
        gone.cancel()  # while its batch computes
        await asyncio.sleep(0.01)
        h.pipeline.open()
        assert int((await kept).outputs["y"][0]) == 4 and h.steps == 2

    run(go())


def test_drain_refuses_the_waiting_requests_and_the_running_batch_finishes():
    async def go() -> None:
        h = Harness(BATCHING)
        first = await h.busy()
        queued = [h.submit(1, deadline=asyncio.get_running_loop().time() + 60), h.submit(2)]
        await asyncio.sleep(0.01)
        h.scheduler.drain(ModelUnavailable("model 'toy' version 1: the server is shutting down"))
        assert h.scheduler.queued == 0
        done = await h.release(first, *queued)
        assert int(done[0].outputs["y"][0]) == 200
        assert [type(r) for r in done[1:]] == [ModelUnavailable, ModelUnavailable]
        assert h.pipeline.batches == [[100]]  # the drained requests never ran
        assert int((await h.submit(3)).outputs["y"][0]) == 6  # later requests are served

    run(go())
