"""Composition root: settings -> backends -> repository -> data plane -> gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry

from backends.loader import get_backend
from runtime.version import attnserve_version
from serving.credentials_watch import CredentialsWatch
from serving.dataplane import DataPlane, labels_of
from serving.grpc.attention_servicer import AttentionServicer
from serving.grpc.auth import Access
from serving.grpc.health import DrainableHealth
from serving.grpc.inference_servicer import InferenceServicer
from serving.grpc.server import NOT_SERVING, SERVING, GrpcServer
from serving.grpc.tracing import TraceContextInterceptor
from serving.http.api import RestApi
from serving.http.server import HttpServer
from serving.metrics import ServingMetrics, TritonCompatCollector
from serving.metrics_endpoint import MetricsEndpoint
from serving.model_control import ModelControl
from serving.repository import ModelRepository, State, repository_problem
from serving.settings import ServerSettings
from serving.stats import StatsRegistry
from serving.tracing import RequestTracer

log = logging.getLogger(__name__)


class StartupError(Exception):
    """A model failed to load, or the repository is missing or empty, with `exit_on_error` set."""


class App:
    """The server process: build inside a running event loop, `await start()`, `await stop()`."""

    def __init__(
        self, settings: ServerSettings, registry: CollectorRegistry | None = None, span_exporter: object = None
    ) -> None:
        """`span_exporter`: where spans go when tracing is on (None: OTLP, as `settings.tracing` says)."""
        self.settings = settings
        self.access = Access.from_settings(settings)  # bad certificates or tokens stop start-up here
        self.executor = ThreadPoolExecutor(max_workers=settings.grpc.workers, thread_name_prefix="attnserve")
        self.stats = StatsRegistry()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServingMetrics(self.registry, tuple(settings.metrics.buckets))
        self.repository = ModelRepository(
            settings.repository, get_backend, settings.backend, settings.device, limits=settings.overrides,
            default_max_batch_size=settings.default_max_batch_size,
        )  # fmt: skip
        self.tracer = RequestTracer(settings.tracing, span_exporter) if settings.tracing.enabled else None
        self.dataplane = DataPlane(
            self.repository, self.executor, self.stats, self.metrics, settings.grpc.inline_when_idle,
            tracer=self.tracer, workers=settings.grpc.workers,
        )  # fmt: skip
        if settings.metrics.triton_names:
            self.registry.register(TritonCompatCollector(self.stats, self.metrics.inflight_by_model))
        self.metrics_server: MetricsEndpoint | None = None
        self.metrics_port = 0
        self.health = DrainableHealth()
        self.ready = False
        self.started = False  # start() finished: readiness follows the models from now on
        self.draining = False  # a stop began: never ready again
        control = ModelControl(self.repository, self.executor, self._model_changed)
        inference = InferenceServicer(
            self.repository, self.dataplane, self.stats, attnserve_version(), lambda: self.ready, control,
            is_draining=lambda: self.draining,
        )  # fmt: skip
        self.grpc = GrpcServer(
            settings.grpc,
            inference,
            AttentionServicer(self.dataplane),
            self.health,
            # per-call interceptors: the trace context is read before the cached handlers run
            [
                *self.access.interceptors(lambda method, code: self.metrics.count_refusal("grpc", method, code)),
                *([TraceContextInterceptor(self.tracer.incoming)] if self.tracer else []),
            ],
            self.access.credentials,
            on_unread=self.dataplane.unread,
        )
        self.port = 0
        self.http: HttpServer | None = None  # KServe V2 REST, over the same data plane
        if settings.http.enabled:
            h = settings.http
            api = RestApi(
                self.repository, self.dataplane, attnserve_version(), lambda: self.ready, lambda: self.draining,
                h.max_body_bytes, h.max_json_bytes, self.access.tokens, self.stats,
                control if self.access.model_control else None,
                lambda method, code: self.metrics.count_refusal("http", method, code),
            )  # fmt: skip
            # the same tokens, certificate and client-certificate policy as the gRPC port
            self.http = HttpServer(h, api, self.access.tls.ssl_context() if self.access.tls else None)
        self.http_port = 0
        self._watch: asyncio.Task[None] | None = None  # reloads a rotated tokens file

    async def start(self) -> int:
        """Bind, load the models, then report ready (see `readiness_problems`). Returns the gRPC port.

        Raises StartupError when `exit_on_error` is set and a model failed to load or the repository
        is missing or empty; the server is bound then, so call `stop()`.
        """
        self.port = await self.grpc.start()
        if self.http is not None:
            self.http_port = await self.http.start()
        await self.health.set("", NOT_SERVING)
        log.info("access: %s", self.access.describe())
        if self.access.control_open:
            log.warning("model control is explicit and no control token is set: anyone may load and unload")
        auth = self.settings.auth
        if self.access.tokens is not None and auth.tokens_file is not None and auth.reload_seconds > 0:
            watch = CredentialsWatch(auth, self.access.tokens, self.registry, auth.reload_seconds)
            self._watch = asyncio.get_running_loop().create_task(watch.run())
        if self.settings.metrics.enabled:
            m = self.settings.metrics
            self.metrics_server = MetricsEndpoint(
                self.registry, m.host, m.port, m.max_connections, m.timeout_seconds, self.access.metrics_ssl_context()
            )
            self.metrics_port = self.metrics_server.start()
        loop = asyncio.get_running_loop()
        failed = await loop.run_in_executor(self.executor, self.repository.load_all, self.settings.models or None)
        for entry in self.repository.index():
            await self._set_health(entry.name)
        problems = self.readiness_problems()
        if self.settings.exit_on_error and (failed or problems):
            errors = [f"model '{n}' failed to load: {reason}" for n, reason in failed.items()] or problems
            raise StartupError("; ".join(errors))
        self.started = True
        await self._set_ready()
        if problems:
            log.warning("attnserve live on port %d but not ready: %s", self.port, "; ".join(problems))
        else:
            log.info("attnserve ready on port %d with %d model(s)", self.port, len(self.repository.index()))
        return self.port

    def readiness_problems(self) -> list[str]:
        """Why the server is not ready: the repository is missing or empty, no model is ready, or
        a model named in `models` is not ready. Empty when it is ready (before draining)."""
        index = self.repository.index()
        if not index:  # missing or empty: say where it looked and how to build one
            return [repository_problem(self.settings.repository) or "the model repository holds no model"]
        states = {e.name: e for e in index}
        problems = [
            f"model '{name}' is not ready: {states[name].reason if name in states else 'not in the repository'}"
            for name in self.settings.models
            if name not in states or states[name].state is not State.READY
        ]
        if not any(e.state is State.READY for e in index):
            problems.append("no model is ready")
        return problems

    async def drain(self, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM: not ready at once; keep serving for `drain_delay_seconds` (or until `hurry` is
        set, e.g. by a second signal) so load balancers notice; then `stop()`."""
        self.draining, self.ready = True, False
        await self.health.enter_graceful_shutdown()  # "" and every model: NOT_SERVING
        delay = self.settings.drain_delay_seconds
        log.info("shutting down: not ready; still serving for %.1f s, then draining for up to %.1f s",
                 delay, self.settings.grace_seconds)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for((hurry or asyncio.Event()).wait(), delay)
        await self.stop()

    async def stop(self) -> None:
        """Refuse new calls (UNAVAILABLE), finish the accepted ones within `grace_seconds`, close."""
        self.draining, self.ready = True, False
        if self._watch is not None:
            self._watch.cancel()
        grace = self.settings.grace_seconds
        self.health.end_watches()  # watchers saw NOT_SERVING during the drain delay; now they end
        stops = [self.grpc.stop(grace)] + ([self.http.stop(grace)] if self.http is not None else [])
        finished = all(await asyncio.gather(*stops))
        snapshot = self.stats.snapshot().values()
        log.info(
            "stopped: %d inference request(s) answered, %d failed, %d call(s) refused while stopping%s",
            sum(s.success.count for s in snapshot), sum(s.fail.count for s in snapshot), self.grpc.gate.refused,
            "" if finished else f"; calls still running after {self.settings.grace_seconds} s were cancelled",
        )  # fmt: skip
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.dataplane.drain()  # requests still queued (their calls outlived the grace) are refused
        self.repository.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.tracer is not None:
            self.tracer.shutdown()  # sends the spans still buffered

    async def run_forever(self) -> int:
        """Serve until SIGTERM/SIGINT, then drain (a second signal skips the drain delay).

        Returns the process exit code: 0, or 1 when start-up failed under `exit_on_error`.
        """
        loop = asyncio.get_running_loop()
        signals = [asyncio.Event(), asyncio.Event()]  # first signal, second signal

        def on_signal() -> None:
            (signals[1] if signals[0].is_set() else signals[0]).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.start()
        except StartupError as exc:
            log.error("exiting (exit_on_error): %s", exc)
            await self.stop()
            return 1
        http = f", HTTP on port {self.http_port}" if self.http is not None else ""
        print(f"attnserve: serving gRPC on port {self.port}, metrics on port {self.metrics_port}{http}", flush=True)
        await signals[0].wait()
        await self.drain(signals[1])
        return 0

    def _model_changed(self, name: str) -> None:
        asyncio.get_running_loop().create_task(self._set_health(name))

    async def _set_ready(self) -> None:
        self.ready = self.started and not self.draining and not self.readiness_problems()
        await self.health.set("", SERVING if self.ready else NOT_SERVING)

    async def _set_health(self, name: str) -> None:
        entry = self.repository.entry(name)
        ready = entry is not None and entry.state is State.READY
        await self.health.set(name, SERVING if ready else NOT_SERVING)
        requests, in_use = [], []  # the labels of requests, and of the ready gauge (device in use)
        for version in entry.versions.values() if entry else ():
            for backend, facts in version.describe().items():
                # the device actually used: an ONNX Runtime model that fell back to CPU reports cpu
                device = "cpu" if facts.get("cpu_fallback") else version.config.device
                requests.append(labels_of(version, backend))
                in_use.append(requests[-1]._replace(device=device))
        self.metrics.forget_model(name, keep=requests + in_use)  # an unloaded model leaves no series
        self.stats.forget(name, keep=entry.versions if entry else ())
        for labels in in_use:
            self.metrics.set_ready(labels, ready)
        if self.started:
            await self._set_ready()


async def serve(settings: ServerSettings) -> int:
    """Build the app in the running loop (grpc.aio binds to it) and serve until a signal; the exit code."""
    return await App(settings).run_forever()
