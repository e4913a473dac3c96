"""Metrics contract: closed label set, stage timings that add up, Triton names, `attnserve stats`."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli import main as cli
from cli.stats import histogram_quantile
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from serving.metrics import MODEL_LABELS
from tests.helpers.server import grpc_stub, start_server

ALLOWED_LABELS = {*MODEL_LABELS, "stage", "code", "le"}


@pytest.fixture(scope="module")
def metrics_server(reference_repository):
    models = ["dates-additive", "dates-transformer", "debian-han"]
    srv = start_server(reference_repository, models=models, metrics={"triton_names": True})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(metrics_server) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc_stub(metrics_server.address) as s:
        yield s


def scrape(srv) -> str:
    srv.settle()  # the last response's metrics are recorded just after it is sent
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.app.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(text: str, name: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def translate(stub, model: str, text: str, backend: str = "onnxruntime") -> pb.ModelInferResponse:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(serialize_bytes(np.array([text.encode()], dtype=np.object_)))
    req.parameters["backend"].string_param = backend
    return stub.ModelInfer(req, timeout=30)


def test_labels_come_from_the_closed_set(stub, metrics_server):
    translate(stub, "dates-additive", "2. September 1983")
    text = scrape(metrics_server)
    for family in text_string_to_metric_families(text):
        if family.name.startswith("attnserve_"):
            for s in family.samples:
                assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)


def test_unknown_model_names_do_not_create_series(stub, metrics_server):
    def unknown() -> None:
        with pytest.raises(grpc.RpcError):
            translate(stub, f"m-{uuid.uuid4().hex[:12]}", "x")

    unknown()  # the one model="" series may appear now
    before = len([line for line in scrape(metrics_server).splitlines() if not line.startswith("#")])
    for _ in range(1000):
        unknown()
    after_text = scrape(metrics_server)
    after = len([line for line in after_text.splitlines() if not line.startswith("#")])
    assert after == before
    counts = samples(after_text, "attnserve_requests_total")
    not_found = [s for s in counts if s.labels["code"] == "NOT_FOUND" and s.labels["model"] == ""]
    assert len(not_found) == 1 and not_found[0].value >= 1001


def test_stage_timings_add_up_and_decode_steps_equal_output_length(stub, metrics_server):
    before = scrape(metrics_server)
    response = translate(stub, "dates-transformer", "Freitag, 2. September 1983")
    after = scrape(metrics_server)
    names = [o.name for o in response.outputs]
    out_len = int(np.frombuffer(response.raw_output_contents[names.index("output_lengths")], dtype="<i8")[0])

    def total(text: str, name: str, **labels) -> float:
        return sum(s.value for s in samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items()))

    sel = {"model": "dates-transformer", "backend": "onnxruntime"}
    delta = lambda name, **kw: total(after, name, **sel, **kw) - total(before, name, **sel, **kw)  # noqa: E731
    request_s = delta("attnserve_request_duration_seconds_sum")
    encode_s = delta("attnserve_compute_duration_seconds_sum", stage="encode")
    steps_s = delta("attnserve_compute_duration_seconds_sum", stage="decode_step")
    assert 0 < encode_s + steps_s <= request_s
    assert delta("attnserve_compute_duration_seconds_count", stage="decode_step") == out_len
    assert delta("attnserve_decode_steps_sum") == out_len == 11


def test_triton_names_and_model_ready(stub, metrics_server):
    translate(stub, "dates-additive", "2. September 1983")
    text = scrape(metrics_server)
    success = {s.labels["model"]: s.value for s in samples(text, "nv_inference_request_success")}
    assert success["dates-additive"] >= 1
    assert samples(text, "nv_inference_queue_duration_us") and samples(text, "nv_inference_request_duration_us")
    ready = {(s.labels["model"], s.labels["backend"]): s.value for s in samples(text, "attnserve_model_ready")}
    assert ready[("dates-additive", "onnxruntime")] == 1 and ready[("dates-additive", "torch")] == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_check_metrics_is_clean(reference_repository):
    # The default exposition (Triton's optional names use `_us` units, which promtool's lint rejects).
    srv = start_server(reference_repository, models=["dates-additive", "debian-han"])
    try:
        with grpc.insecure_channel(srv.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            translate(stub, "dates-additive", "2. September 1983")
            with pytest.raises(grpc.RpcError):
                translate(stub, "dates-additive", "")
        text = scrape(srv)
    finally:
        srv.stop()
    assert "attnserve_request_duration_seconds_bucket" in text
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_stats_command_prints_percentiles(stub, metrics_server, capsys):
    translate(stub, "dates-additive", "2. September 1983")
    metrics_server.settle()
    assert cli.main(["stats", "--url", f"http://127.0.0.1:{metrics_server.app.metrics_port}/metrics"]) == 0
    out = capsys.readouterr().out
    assert "dates-additive" in out and "decode_step" in out and "p99 ms" in out


def test_histogram_quantile_matches_prometheus_interpolation():
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.004, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.002)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.003)
