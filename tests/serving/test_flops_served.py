"""attnserve_flops_total over the real server: N equal requests count N times one request's FLOPs
(its encoder and every decoder step it ran, from flops.json), however the server batched them; the
compute facts reach the model configuration and metadata.

Iteration-level decoding is exact for the GRU models; a Transformer request that joins a running
batch shares decoder steps with rows at other positions, whose caches pad its own: that padding is
computed and counted, so there its FLOPs depend on its batch-mates (not tested for equality)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.flops import FlopsFile
from runtime.tensors import serialize_bytes
from tests.helpers.metrics import samples, scrape
from tests.helpers.server import grpc_stub, start_server

MODELS = ["dates-additive", "dates-transformer"]
TEXT = "Freitag, 2. September 1983"
N = 24


@pytest.fixture(scope="module")
def flops_server(reference_repository):
    # no inline runs on the event loop: requests reach the queue, where batches form
    srv = start_server(
        reference_repository, models=MODELS, model_control_mode="explicit", grpc={"inline_when_idle": False}
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(flops_server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc_stub(flops_server.address) as s:
        yield s


def load(stub, model: str, **override) -> None:
    """Load `model` with config.yaml fields overridden (RepositoryModelLoad's `config` parameter)."""
    request = pb.RepositoryModelLoadRequest(model_name=model)
    request.parameters["config"].string_param = json.dumps(override)
    stub.RepositoryModelLoad(request, timeout=120)


def translate(stub, model: str) -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(serialize_bytes(np.array([TEXT.encode()], dtype=np.object_)))
    return stub.ModelInfer(req, timeout=60)


def lengths(response: pb.ModelInferResponse) -> tuple[int, int]:
    """(source tokens, decoder steps) of a one-item translation."""
    names = [o.name for o in response.outputs]
    raw = dict(zip(names, response.raw_output_contents, strict=True))
    src = int(np.frombuffer(raw["input_lengths"], np.int64)[0])
    steps = int(np.frombuffer(raw["output_lengths"], np.int64)[0])  # EOS included: one step per token
    return src, steps


def batches(srv, model: str) -> tuple[float, float]:
    """(items, executions) so far: attnserve_batch_size's sum and count."""
    text = scrape(srv)
    found = [
        sum(s.value for s in samples(text, f"attnserve_batch_size_{part}") if s.labels["model"] == model)
        for part in ("sum", "count")
    ]
    return found[0], found[1]


def counter(srv, model: str) -> float:
    found = [s.value for s in samples(scrape(srv), "attnserve_flops_total") if s.labels["model"] == model]
    return sum(found)


@pytest.mark.parametrize(
    ("model", "decoding"),
    [("dates-additive", "request"), ("dates-transformer", "request"), ("dates-additive", "iteration")],
)
def test_n_equal_requests_count_n_times_one_requests_flops_exactly(
    flops_server, stub, reference_repository, model, decoding
):
    # a batch waits up to 0.1 s for 8 requests: the concurrent ones below run together
    batching = {"max_queue_delay_microseconds": 100_000, "preferred_batch_size": [8], "max_queue_size": 256}
    load(stub, model, decode_batching=decoding, dynamic_batching=batching)
    flops = FlopsFile.read(reference_repository / model / "1")
    assert flops is not None
    enc, dec = flops.components["encoder"].total, flops.components["decoder_step"].total

    before = counter(flops_server, model)
    src, steps = lengths(translate(stub, model))
    one = enc.per_row({"src_len": src}) + sum(dec.per_row({"src_len": src, "past_len": t}) for t in range(steps))
    assert counter(flops_server, model) - before == one

    before, executions = counter(flops_server, model), batches(flops_server, model)
    with ThreadPoolExecutor(8) as pool:  # concurrent: the server batches them
        answers = list(pool.map(lambda _: lengths(translate(stub, model)), range(N)))
    assert set(answers) == {(src, steps)}
    assert counter(flops_server, model) - before == N * one
    if decoding == "request":  # not one execution per request: batches formed
        assert batches(flops_server, model)[1] - executions[1] < N


def test_compute_facts_are_in_the_model_config_and_metadata(flops_server, stub, reference_repository):
    flops = FlopsFile.read(reference_repository / "dates-additive" / "1")
    params = stub.ModelConfig(pb.ModelConfigRequest(name="dates-additive"), timeout=10).config.parameters
    assert params["parameters"].string_value == str(flops.parameters)
    assert params["flops.decoder_step"].string_value == flops.components["decoder_step"].total.text()
    assert float(params["flops_per_request"].string_value) == pytest.approx(flops.per_request.mean, abs=1)
    url = f"http://{flops_server.http_address}/v2/models/dates-additive"
    with urllib.request.urlopen(url, timeout=10) as r:
        metadata = json.loads(r.read())
    assert metadata["parameters"]["parameters"] == str(flops.parameters)
