"""Dynamic batching over real gRPC: merged requests get the answers they get alone.

Every reference model's held-out inputs (up to 2,000 per model, one request each, translate
requests with varied `max_length` and `beam_size`) go from 32 concurrent clients to the server
of the reference repository, whose config.yaml files carry the exported dynamic batching. Each
answer must equal the pipeline's answer to that request alone: text, labels and orders
identical, attention within 1e-4. ModelStatistics must show that requests were merged.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.loader import get_backend
from models import checkpoint
from models.recipes import RECIPES
from runtime.pipelines.factory import pipeline_class
from serving.grpc import convert
from serving.grpc._gen.inference import grpc_service_pb2 as pb
from serving.grpc._gen.inference import grpc_service_pb2_grpc as pb_grpc
from serving.repository import ModelRepository

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 32
HELD_OUT = 2000
TASKS = {"dates": "translate", "sorting": "sort", "debian-docs": "classify"}
TRANSLATE_PARAMS: list[dict[str, Any]] = [{}, {}, {"max_length": 6}, {"beam_size": 3}, {}, {"max_length": 11}]
ATOL = 1e-4


@pytest.fixture(scope="module")
def local(reference_repository: Path) -> Iterator[ModelRepository]:
    repo = ModelRepository(reference_repository, get_backend)
    yield repo
    repo.close()


def held_out(model: str) -> tuple[str, list[dict[str, np.ndarray]]]:
    """The model's task and one batch-1 request per held-out input, as a client sends them."""
    recipe = RECIPES[model]
    family = checkpoint.load(ROOT / "checkpoints" / model).family
    test = list(type(family).load_data(recipe.train.seed).test)[:HELD_OUT]
    task = TASKS[recipe.task]
    return task, [inputs for _, inputs in pipeline_class(task).requests([family.source(ex) for ex in test], 1)]


async def send_all(address: str, requests: list[pb.ModelInferRequest]) -> list[dict[str, np.ndarray]]:
    """Every request, from CLIENTS closed-loop clients on one channel; the responses in order."""
    answers: list[Any] = [None] * len(requests)
    todo = iter(range(len(requests)))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def client() -> None:
            for i in todo:
                answers[i] = convert.response_tensors(await stub.ModelInfer(requests[i], timeout=120))

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return answers


def statistics(address: str, model: str) -> tuple[int, int]:
    with grpc.insecure_channel(address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(pb.ModelStatisticsRequest(name=model))
    s = stats.model_stats[0]
    return s.inference_count, s.execution_count


def batch_size_histogram(server, model: str) -> tuple[int, int]:
    """(items, executions) of attnserve_batch_size over every backend of `model`, from /metrics."""
    server.settle()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=5) as r:
        samples = [s for f in text_string_to_metric_families(r.read().decode()) for s in f.samples]
    mine = [s for s in samples if s.labels.get("model") == model]
    total = lambda name: int(sum(s.value for s in mine if s.name == name))  # noqa: E731
    return total("attnserve_batch_size_sum"), total("attnserve_batch_size_count")


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_batched_answers_equal_batch_one_answers(server, local: ModelRepository, model: str):
    task, inputs = held_out(model)
    params = [TRANSLATE_PARAMS[i % len(TRANSLATE_PARAMS)] if task == "translate" else {} for i in range(len(inputs))]
    version = local.load(model).versions[1]
    _, runners = version.runners("onnxruntime")
    alone = [version.pipeline.run(x, p, runners) for x, p in zip(inputs, params, strict=True)]

    requests = [convert.infer_request(model, x, params=p) for x, p in zip(inputs, params, strict=True)]
    inferences, executions = statistics(server.address, model)
    batched = asyncio.run(send_all(server.address, requests))
    inferences_after, executions_after = statistics(server.address, model)

    assert inferences_after - inferences == len(requests)
    merged = (inferences_after - inferences) - (executions_after - executions)
    assert merged > 0, "no request shared a batch: nothing was tested"
    # Prometheus counts the same executed batches as ModelStatistics (all traffic since start)
    assert batch_size_histogram(server, model) == (inferences_after, executions_after)
    for i, (want, got) in enumerate(zip(alone, batched, strict=True)):
        assert list(got) == list(want), i
        for name, expected in want.items():
            assert got[name].shape == expected.shape, (i, name, params[i])
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(got[name], expected, atol=ATOL, rtol=0, err_msg=f"request {i} {name}")
            else:
                assert np.array_equal(got[name], expected), (i, name, params[i], got[name], expected)
