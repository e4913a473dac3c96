"""Iteration-level decode batching over real gRPC: with `decode_batching: iteration` (set by a
RepositoryModelLoad override), 32 concurrent clients mixing dates-additive requests (beam 1 and 3,
several max_length) and sort-pointer requests of 5 to 15 values get exactly the answers they get
alone (text and orders identical, attention within 1e-4), while requests shared decoder steps."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.loader import get_backend
from protocol import codec
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from serving.repository import ModelRepository
from tests.helpers.heldout import held_out, send_all, statistics
from tests.helpers.server import LONGEST_DATES_INPUT, RunningServer, start_server

DATES, SORTER = "dates-additive", "sort-pointer"
REQUESTS = 120  # per model
TRANSLATE_PARAMS: list[dict[str, Any]] = [
    {}, {"beam_size": 3}, {"max_length": 6}, {"max_length": 11}, {"beam_size": 3, "max_length": 8},
]  # fmt: skip
ATOL = 1e-4


def load(stub: pb_grpc.GRPCInferenceServiceStub, model: str, **override: Any) -> None:
    request = pb.RepositoryModelLoadRequest(model_name=model)
    request.parameters["config"].string_param = json.dumps(override)
    stub.RepositoryModelLoad(request, timeout=120)


@pytest.fixture(scope="module")
def srv(reference_repository: Path) -> Iterator[RunningServer]:
    server = start_server(reference_repository, model_control_mode="explicit", models=[DATES, SORTER])
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for model in (DATES, SORTER):
            load(stub, model, decode_batching="iteration")
    yield server
    server.stop()


def sort_inputs(n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(10)
    return [{"values": rng.choice(100, size=(1, int(rng.integers(5, 16))), replace=False)} for _ in range(n)]


def step_rows(server: RunningServer, model: str) -> dict[float, int]:
    """attnserve_decode_step_rows of `model`: decoder steps with at most `le` rows, per bucket."""
    server.settle()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=5) as r:
        samples = [s for f in text_string_to_metric_families(r.read().decode()) for s in f.samples]
    buckets: dict[float, int] = {}
    for s in samples:
        if s.name == "attnserve_decode_step_rows_bucket" and s.labels["model"] == model:
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0) + int(s.value)
    return buckets


def test_iteration_level_answers_equal_batch_one_answers(srv: RunningServer, reference_repository: Path):
    _, dates = held_out(DATES, {}, REQUESTS)
    assert len(dates) == REQUESTS
    sorts = sort_inputs(REQUESTS)
    params = [TRANSLATE_PARAMS[i % len(TRANSLATE_PARAMS)] for i in range(len(dates))]
    local = ModelRepository(reference_repository, get_backend)
    try:
        alone = []
        for model, inputs, ps in ((DATES, dates, params), (SORTER, sorts, [{}] * len(sorts))):
            version = local.load(model).versions[1]
            _, runners = version.runners("onnxruntime")
            alone += [version.pipeline.run(x, p, runners) for x, p in zip(inputs, ps, strict=True)]
    finally:
        local.close()
    requests = [codec.infer_request(DATES, x, params=p) for x, p in zip(dates, params, strict=True)]
    requests += [codec.infer_request(SORTER, x) for x in sorts]
    order = [i for pair in zip(range(REQUESTS), range(REQUESTS, 2 * REQUESTS), strict=True) for i in pair]

    before = {m: statistics(srv.address, m) for m in (DATES, SORTER)}
    answers = asyncio.run(send_all(srv.address, [requests[i] for i in order]))  # the two models interleaved
    got = dict(zip(order, answers, strict=True))
    after = {m: statistics(srv.address, m) for m in (DATES, SORTER)}

    for i, want in enumerate(alone):
        assert list(got[i]) == list(want), i
        for name, expected in want.items():
            assert got[i][name].shape == expected.shape, (i, name)
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(got[i][name], expected, atol=ATOL, rtol=0, err_msg=f"request {i} {name}")
            else:
                assert np.array_equal(got[i][name], expected), (i, name, got[i][name], expected)
    for model in (DATES, SORTER):
        inferences, executions = (a - b for a, b in zip(after[model], before[model], strict=True))
        assert inferences == REQUESTS  # one item each; an execution is an admission (several joined at once)
        assert 0 < executions < inferences, (model, executions)
    # decoder steps over rows of several requests: more rows than one request brings (beam 3: 3 rows)
    for model, alone_rows in ((DATES, 4), (SORTER, 1)):
        buckets = step_rows(srv, model)
        assert buckets[float("inf")] > buckets[alone_rows] > 0, (model, buckets)


def test_a_request_whose_client_left_leaves_the_decode_batch(srv: RunningServer):
    """About half a second of decoding (64 of the longest texts, beam 16: 1,024 rows, joining the
    empty batch alone), cancelled once its first decoder step has run: its rows leave at the next
    step, before its 16th."""
    texts = np.array([LONGEST_DATES_INPUT.encode()] * 64, dtype=np.object_)
    slow = codec.infer_request(DATES, {"text": texts}, params={"beam_size": 16})
    model = srv.app.repository.get(DATES)
    scheduler = srv.app.dataplane.schedulers.get(model, model.default_backend)
    before = step_rows(srv, DATES)
    fails_before = model_stats(srv, DATES).inference_stats.fail.count

    async def leave_while_decoding() -> None:
        async with grpc.aio.insecure_channel(srv.address) as channel:
            call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(slow, timeout=120)
            end = time.monotonic() + 30
            steps = scheduler.steps
            while scheduler.steps == steps:  # it decodes (cancelled before its first step, it would leave before any)
                assert time.monotonic() < end and not call.done(), "the request never decoded"
                await asyncio.sleep(0.005)
            call.cancel()
            while scheduler.running:  # its rows left; nothing else to decode
                assert time.monotonic() < end + 30, "its rows never left the decode batch"
                await asyncio.sleep(0.01)

    asyncio.run(leave_while_decoding())
    after = step_rows(srv, DATES)
    ran = after[float("inf")] - before[float("inf")]
    assert 0 < ran < 16, "it ended before its client left: the test proves nothing"
    assert after[1024.0] - after[256.0] == before[1024.0] - before[256.0] + ran  # each of its steps: its 1,024 rows
    assert model_stats(srv, DATES).inference_stats.fail.count == fails_before + 1  # counted, as CANCELLED


def model_stats(server: RunningServer, model: str) -> pb.ModelStatistics:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        server.settle()  # the cancelled request's record is written as a loop callback
        return stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=10).model_stats[0]


def test_model_config_reports_the_decode_batching(srv: RunningServer):
    with grpc.insecure_channel(srv.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        config = stub.ModelConfig(pb.ModelConfigRequest(name=DATES), timeout=10).config
    assert config.parameters["decode_batching"].string_value == "iteration"


def test_iteration_is_refused_for_a_model_without_a_decoder(srv: RunningServer):
    with grpc.insecure_channel(srv.address) as channel, pytest.raises(grpc.RpcError) as err:
        load(pb_grpc.GRPCInferenceServiceStub(channel), "debian-han", decode_batching="iteration")
    assert "decode_batching 'iteration' needs an encoder + decoder_step model" in err.value.details()
