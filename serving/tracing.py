"""OpenTelemetry tracing of inference requests, made from their RequestRecords (off by default).

When `tracing.enabled` is set, every inference request (ModelInfer and the attnserve.v1 RPCs)
becomes a SERVER span with one child per stage: `queue`, `compute_input`, one per component call
(`encoder`, `classify`; the decoder steps as one `decode_loop` span with their count), and
`compute_output`. The spans are built from the record's timestamps when the request is accounted
(after the response), so tracing adds no work to the request path, and none at all when off.

A transport hands in the request's method and W3C trace context (`traceparent`, `tracestate`)
through `RequestTracer.incoming`; the span joins that trace, and the SDK's parent-based sampler
follows the caller's sampled flag. Attributes carry the closed label set (model, version,
attention, backend, device), the status code and the batch size: never a string the client sent.

The OpenTelemetry API and SDK are an optional dependency (`pip install attnserve[tracing]`):
this module imports them only when a RequestTracer is built, that is only when tracing is on.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from serving.record import OK, RequestRecord

DECODER_STEP = "decoder_step"  # its calls make one decode_loop span
INSTRUMENTATION = "attnserve.serving"


class TracingSettings(BaseModel):
    """`tracing.*`: ATTNSERVE_TRACING__ENABLED=true, ATTNSERVE_TRACING__ENDPOINT=http://collector:4317."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    # OTLP/gRPC collector; None: the exporter's own default (OTEL_EXPORTER_OTLP_ENDPOINT, else
    # localhost:4317). An http:// endpoint is plaintext, https:// uses TLS.
    endpoint: str | None = None
    service_name: str = "attnserve"
    # one export's limit, retries included; also bounds the flush at shutdown (within the pod's grace)
    timeout_seconds: float = Field(2.0, gt=0)
    # the share of traces started here that are kept; a caller's traceparent decides for its own
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0)


class Incoming(NamedTuple):
    """What a transport knows of a request before the data plane sees it."""

    rpc: str  # the method, e.g. "/inference.GRPCInferenceService/ModelInfer"
    traceparent: str = ""  # W3C trace context headers as the caller sent them ("" = none)
    tracestate: str = ""
    system: str = "grpc"  # the rpc.system attribute


class TracingUnavailable(ValueError):
    """Tracing is enabled but the OpenTelemetry SDK is not installed."""


class RequestTracer:
    """Turns finished RequestRecords into spans on its own TracerProvider (no global state).

    `exporter` is any SpanExporter, exported synchronously (tests pass the SDK's
    InMemorySpanExporter); None sends spans in batches, from a background thread, to the OTLP
    endpoint of `settings`.
    """

    def __init__(self, settings: TracingSettings, exporter: Any = None) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:
            raise TracingUnavailable(
                f"tracing is enabled but OpenTelemetry is not installed ({exc}); "
                "pip install 'attnserve[tracing]' or set tracing.enabled=false"
            ) from exc
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise TracingUnavailable(
                    f"tracing is enabled but the OTLP exporter is not installed ({exc}); "
                    "pip install 'attnserve[tracing]'"
                ) from exc
            processor: Any = BatchSpanProcessor(
                OTLPSpanExporter(endpoint=settings.endpoint, timeout=settings.timeout_seconds)
            )
        else:
            processor = SimpleSpanProcessor(exporter)
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        )
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer(INSTRUMENTATION)
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER
        # set by the transport in the request's task; `capture` reads it when the record opens
        self.incoming: ContextVar[Incoming | None] = ContextVar("attnserve_trace_incoming", default=None)

    def capture(self) -> Incoming | None:
        """The running request's method and trace context, as its transport set them."""
        return self.incoming.get()

    def export(self, record: RequestRecord) -> None:
        """Make the spans of one finished request (called off its path, after the response)."""
        offset = time.time_ns() - time.perf_counter_ns()  # perf_counter_ns -> Unix epoch ns
        incoming: Incoming | None = record.trace
        parent = None
        if incoming is not None and incoming.traceparent:
            carrier = {"traceparent": incoming.traceparent, "tracestate": incoming.tracestate}
            parent = self._propagator.extract(carrier)
        rpc = incoming.rpc.lstrip("/") if incoming is not None else ""
        service, _, method = rpc.rpartition("/")
        labels = {
            "attnserve.model": record.model,
            "attnserve.version": "" if record.version is None else str(record.version),
            "attnserve.attention": record.attention,
            "attnserve.backend": record.backend,
            "attnserve.device": record.device,
        }
        attributes = {
            "rpc.system": incoming.system if incoming is not None else "",
            "rpc.service": service,
            "rpc.method": method,
            **labels,
            "attnserve.code": record.code,
            "attnserve.batch_size": record.batch,
        }
        span = self._tracer.start_span(
            rpc or "infer",
            context=parent,
            kind=self._server_kind,
            attributes={k: v for k, v in attributes.items() if v != ""},  # type: ignore[misc]  # str and int values
            start_time=record.arrived + offset,
        )
        if not span.is_recording():  # not sampled
            return
        if record.code != OK:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, record.code))
        context = self._trace.set_span_in_context(span)
        labels = {k: v for k, v in labels.items() if v != ""}
        for name, start, end, extra in _stages(record):
            child = self._tracer.start_span(
                name, context=context, attributes={**labels, **extra}, start_time=start + offset
            )
            child.end(end_time=end + offset)
        span.end(end_time=record.done + offset)

    def shutdown(self) -> None:
        """Send the spans still buffered, then stop the exporter."""
        self._provider.shutdown()


def _stages(record: RequestRecord) -> list[tuple[str, int, int, dict[str, Any]]]:
    """(span name, start ns, end ns, attributes) of each stage the request reached."""
    stages: list[tuple[str, int, int, dict[str, Any]]] = []
    if not record.queued:  # failed before it reached a model's pipeline
        return stages
    end_of_queue = record.started or record.done
    stages.append(("queue", record.queued, end_of_queue, {}))
    if not record.started:
        return stages
    calls = record.calls
    first_call = calls[0][1] if calls else (record.finished or record.done)
    stages.append(("compute_input", record.started, first_call, {}))
    components = {id(child): name for name, child in (record.series.stages if record.series else {}).items()}
    steps: list[tuple[int, int]] = []
    for child, start, end, _ in calls:
        component = components.get(id(child), "component")
        if component == DECODER_STEP:
            steps.append((start, end))
        else:
            stages.append((component, start, end, {"attnserve.component": component}))
    if steps:
        stages.append(("decode_loop", steps[0][0], steps[-1][1], {"attnserve.decode_steps": len(steps)}))
    if record.finished:
        last_call = calls[-1][2] if calls else record.finished
        stages.append(("compute_output", last_call, record.done, {}))
    return stages
