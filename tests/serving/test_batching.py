"""Batched answers over real gRPC equal batch-1 answers (the bar dynamic batching must meet).

Every reference model gets its own held-out inputs (the test split the export check uses, through
`Family.held_out`), one request each, translate requests with varied `max_length` and `beam_size`,
sent by 32 concurrent clients to the server of the reference repository. Each answer must equal
the same pipeline's answer to that request computed alone in this process: text, labels and
orders identical, attention within 1e-4. ModelStatistics must show that requests were merged,
and Prometheus must count the same executed batches.

Size: 2,000 held-out inputs in total, split evenly over the reference models (100 each; the models
of one task take successive slices of its test split, so 900 distinct dates, and 900 sentences of
dates-in-text, the location model's among those it can read): 2,000 per model
would take minutes on the 2-core machine, and each model's first wave of 32 requests already
merges. `mode` is the scheduling under test, applied as a RepositoryModelLoad `config` override
({} = config.yaml as exported); another mode is one more entry in MODES.

The int8 twins (dates-additive-int8; debian-han-int8 where it pays) are exported without dynamic batching and
left out: ONNX Runtime's dynamic quantization scales activations over the whole batch, so their
batched answers would differ from batch-1 ones beyond 1e-4 (measured: attention up to 1.5e-2,
probabilities up to 4e-3; texts and labels were identical).
"""

from __future__ import annotations

import asyncio
import json
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
from tests.helpers.heldout import MODELS, PER_MODEL, held_out, send_all, statistics
from tests.helpers.metrics import scrape

TRANSLATE_PARAMS: list[dict[str, Any]] = [{}, {}, {"max_length": 6}, {"beam_size": 3}, {}, {"max_length": 11}]
ATOL = 1e-4
# mode -> the config override it is served under ({}: config.yaml as `attnserve export` writes it)
MODES: dict[str, dict[str, Any]] = {
    "request": {"decode_batching": "request"},  # request-level dynamic batching (the exported dynamic_batching)
    "iteration": {"decode_batching": "iteration"},  # one running decode batch (decoder models only)
}


@pytest.fixture(scope="module")
def local(reference_repository: Path) -> Iterator[ModelRepository]:
    repo = ModelRepository(reference_repository, get_backend)
    yield repo
    repo.close()


@pytest.fixture(scope="module")
def held_out_cache() -> dict[tuple[type, int], list[Any]]:
    """Held-out examples by (family class, seed): the dates models share one (babel is slow)."""
    return {}


def batch_size_histogram(server, model: str) -> tuple[int, int]:
    """(items, executions) of attnserve_batch_size over every backend of `model`, from /metrics."""
    samples = [s for f in text_string_to_metric_families(scrape(server)) for s in f.samples]
    mine = [s for s in samples if s.labels.get("model") == model]
    total = lambda name: int(sum(s.value for s in mine if s.name == name))  # noqa: E731
    return total("attnserve_batch_size_sum"), total("attnserve_batch_size_count")


def load(address: str, model: str, override: dict[str, Any] | None) -> None:
    """(Re)load `model` with `override` (None: as config.yaml says)."""
    request = pb.RepositoryModelLoadRequest(model_name=model)
    if override is not None:
        request.parameters["config"].string_param = json.dumps(override)
    with grpc.insecure_channel(address) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(request, timeout=120)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_batched_answers_equal_batch_one_answers(server, local: ModelRepository, held_out_cache, mode, model):
    task, inputs = held_out(model, held_out_cache)
    assert len(inputs) == PER_MODEL
    override = dict(MODES[mode])
    # no decoder: only request-level batching applies to a classifier
    if task == "classify" and override.pop("decode_batching", "request") == "iteration":
        pytest.skip("a classifier has no decoder to batch by iteration")
    params = [TRANSLATE_PARAMS[i % len(TRANSLATE_PARAMS)] if task == "translate" else {} for i in range(len(inputs))]
    version = local.load(model).versions[1]
    _, runners = version.runners("onnxruntime")
    alone = [version.pipeline.run(x, p, runners) for x, p in zip(inputs, params, strict=True)]

    requests = [codec.infer_request(model, x, params=p) for x, p in zip(inputs, params, strict=True)]
    if override:
        load(server.address, model, override)
    try:
        (inferences, executions), histogram = statistics(server.address, model), batch_size_histogram(server, model)
        batched = asyncio.run(send_all(server.address, requests))
        (inferences_after, executions_after) = statistics(server.address, model)
        histogram_after = batch_size_histogram(server, model)
    finally:
        if override:
            load(server.address, model, None)

    assert inferences_after - inferences == len(requests)
    merged = (inferences_after - inferences) - (executions_after - executions)
    assert merged > 0, "no request shared a batch: nothing was tested"
    # Prometheus counts the same executed batches (items, executions) as ModelStatistics
    assert (histogram_after[0] - histogram[0], histogram_after[1] - histogram[1]) == (
        inferences_after - inferences,
        executions_after - executions,
    )
    for i, (want, got) in enumerate(zip(alone, batched, strict=True)):
        assert list(got) == list(want), i
        for name, expected in want.items():
            assert got[name].shape == expected.shape, (i, name, params[i])
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(got[name], expected, atol=ATOL, rtol=0, err_msg=f"request {i} {name}")
            else:
                assert np.array_equal(got[name], expected), (i, name, params[i], got[name], expected)
