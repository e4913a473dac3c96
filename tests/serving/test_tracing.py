"""OpenTelemetry tracing (serving/tracing.py): a real server with `tracing.enabled`, its spans caught by
the SDK's InMemorySpanExporter or a real OTLP/gRPC receiver; off by default, and then the server
never imports OpenTelemetry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from protocol.gen.attnserve.v1 import attention_pb2, attention_pb2_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.tensors import serialize_bytes
from serving.app import App
from serving.settings import ServerSettings
from tests.helpers.paths import ROOT
from tests.helpers.server import RunningServer, light_request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INFER = "inference.GRPCInferenceService/ModelInfer"
LABELS = {"attnserve.model", "attnserve.version", "attnserve.attention", "attnserve.backend", "attnserve.device"}


class TracedServer(RunningServer):
    """A RunningServer whose App sends its spans to `exporter`."""

    def __init__(self, settings: ServerSettings, exporter: InMemorySpanExporter | None) -> None:
        self.exporter = exporter
        super().__init__(settings)

    async def _build(self, settings: ServerSettings) -> App:  # type: ignore[override]
        return App(settings, span_exporter=self.exporter)


def settings_for(repository: Path, **tracing) -> ServerSettings:
    return ServerSettings(
        repository=repository,
        models=["dates-additive", "debian-han", "sort-pointer"],
        grpc={"host": "127.0.0.1", "port": 0},
        metrics={"enabled": False},
        tracing={"enabled": True, **tracing},
    )


@pytest.fixture(scope="module")
def traced(reference_repository: Path):
    srv = TracedServer(settings_for(reference_repository), InMemorySpanExporter())
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(traced):
    with grpc.insecure_channel(traced.address) as ch:
        yield ch


def spans_of(traced: TracedServer, call) -> list[ReadableSpan]:
    """The spans one call made (exported when the server accounts the request, after the response)."""
    traced.exporter.clear()
    call()
    traced.settle()
    return list(traced.exporter.get_finished_spans())


def text_request(model: str, text: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="text", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(serialize_bytes(np.array([text.encode()], dtype=np.object_)))
    return req


def tree(spans: list[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The request's span and its children, checked to form one tree inside the request's time."""
    (root,) = [s for s in spans if s.kind is SpanKind.SERVER]
    children = [s for s in spans if s is not root]
    for child in children:
        assert child.parent.span_id == root.context.span_id and child.context.trace_id == root.context.trace_id
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time, child.name
    return root, sorted(children, key=lambda s: s.start_time)


def test_model_infer_joins_the_callers_trace_with_a_span_per_stage(traced, channel):
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("tracestate", "vendor=x"))
    spans = spans_of(
        traced, lambda: stub.ModelInfer(text_request("dates-additive", "3 mars 2021"), metadata=metadata, timeout=30)
    )
    root, children = tree(spans)
    assert root.name == INFER
    assert f"{root.context.trace_id:032x}" == TRACE_ID and f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.parent.is_remote and root.context.trace_state.to_header() == "vendor=x"
    assert root.status.status_code is StatusCode.UNSET
    assert dict(root.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "attnserve.model": "dates-additive",
        "attnserve.version": "1",
        "attnserve.attention": "additive",
        "attnserve.backend": "onnxruntime",
        "attnserve.device": "cpu",
        "attnserve.code": "OK",
        "attnserve.batch_size": 1,
    }
    assert [s.name for s in children] == ["queue", "compute_input", "encoder", "decode_loop", "compute_output"]
    for child in children:
        assert set(child.attributes) >= LABELS, child.name
        assert child.attributes["attnserve.model"] == "dates-additive"
    loop = children[3]
    assert 1 <= loop.attributes["attnserve.decode_steps"] <= 16  # the model's max_output_length


def test_attention_rpcs_are_traced_and_start_a_trace_without_traceparent(traced, channel):
    stub = attention_pb2_grpc.AttentionStub(channel)
    spans = spans_of(
        traced, lambda: stub.Classify(attention_pb2.ClassifyRequest(model="debian-han", texts=["A game."]), timeout=30)
    )
    root, children = tree(spans)
    assert root.name == "attnserve.v1.Attention/Classify" and root.parent is None
    assert [s.name for s in children] == ["queue", "compute_input", "classify", "compute_output"]
    spans = spans_of(
        traced,
        lambda: stub.Sort(attention_pb2.SortRequest(model="sort-pointer", values=[{"values": [3, 1, 2]}]), timeout=30),
    )
    root, children = tree(spans)
    assert root.name == "attnserve.v1.Attention/Sort" and root.attributes["attnserve.model"] == "sort-pointer"
    assert [s.name for s in children] == ["queue", "compute_input", "encoder", "decode_loop", "compute_output"]


def test_a_failed_request_is_an_error_span_without_client_strings(traced, channel):
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    secret = "client-secret-model-name"

    def call() -> None:
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(text_request(secret, "x"), timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    (root,) = spans_of(traced, call)
    assert root.status.status_code is StatusCode.ERROR and root.status.description == "NOT_FOUND"
    assert root.attributes["attnserve.code"] == "NOT_FOUND" and "attnserve.model" not in root.attributes
    assert secret not in repr(dict(root.attributes)) and secret not in root.name
    # a known model, bad input: the error span carries the model's labels, and no stage was reached
    bad = text_request("dates-additive", "x")
    bad.outputs.add(name="nope")

    def call_bad() -> None:
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(bad, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    (root,) = spans_of(traced, call_bad)
    assert root.attributes["attnserve.model"] == "dates-additive"
    assert root.attributes["attnserve.code"] == "INVALID_ARGUMENT" and root.status.description == "INVALID_ARGUMENT"


def test_the_callers_sampling_decision_is_kept_and_other_rpcs_make_no_spans(traced, channel):
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    unsampled = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00"),)
    assert spans_of(traced, lambda: stub.ModelInfer(light_request(), metadata=unsampled, timeout=30)) == []
    assert spans_of(traced, lambda: stub.ServerReady(pb.ServerReadyRequest(), timeout=10)) == []
    assert spans_of(traced, lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="sort-pointer"), timeout=10)) == []
    # a malformed traceparent is ignored: the request starts its own trace
    bad = (("traceparent", "00-not-a-trace-01"),)
    root, _ = tree(spans_of(traced, lambda: stub.ModelInfer(light_request(), metadata=bad, timeout=30)))
    assert root.parent is None and root.kind is SpanKind.SERVER


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver on port 0."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(self, request, context):
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_an_otlp_endpoint(reference_repository: Path):
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        srv = TracedServer(
            settings_for(reference_repository, endpoint=f"http://127.0.0.1:{port}", service_name="attnserve-test"),
            None,
        )
        try:
            with grpc.insecure_channel(srv.address) as ch:
                pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(light_request(), timeout=30)
        finally:
            srv.stop()  # flushes the batch
        assert collector.received.wait(10)
    finally:
        receiver.stop(0)
    spans = [
        (rs.resource, span)
        for req in collector.requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    names = sorted(span.name for _, span in spans)
    assert names == sorted([INFER, "queue", "compute_input", "encoder", "decode_loop", "compute_output"])
    resource = spans[0][0]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "attnserve-test"


SERVE_ONCE = """
import asyncio, sys
from serving.app import App
from serving.settings import ServerSettings

async def main():
    settings = ServerSettings(repository=sys.argv[1], models=["sort-pointer"], grpc={"host": "127.0.0.1", "port": 0},
                              metrics={"enabled": False})
    app = App(settings)
    await app.start()
    from tests.helpers.server import light_request
    import grpc
    from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
        await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(light_request(), timeout=30)
    await app.stop()
    print("tracer", app.tracer, "otel", sorted(m for m in sys.modules if m.startswith("opentelemetry")))

asyncio.run(main())
"""


def test_tracing_is_off_by_default_and_then_opentelemetry_is_never_imported(reference_repository: Path):
    assert ServerSettings().tracing.enabled is False
    out = subprocess.run(
        [sys.executable, "-c", SERVE_ONCE, str(reference_repository)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tracer None otel []"


def test_enabling_tracing_without_opentelemetry_installed_is_a_clear_error(reference_repository: Path):
    """`attnserve serve` where the SDK is not installed (imports of it fail), tracing on from the environment."""
    hide = "import sys; sys.modules['opentelemetry'] = None; from cli.main import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run(
        [sys.executable, "-c", hide, "serve", "--repository", str(reference_repository), "--grpc-port", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "ATTNSERVE_TRACING__ENABLED": "true", "ATTNSERVE_METRICS__ENABLED": "false"},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "attnserve serve: tracing is enabled but OpenTelemetry is not installed" in out.stderr
    assert "pip install 'attnserve[tracing]'" in out.stderr
