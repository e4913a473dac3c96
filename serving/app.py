"""Composition root: settings -> backends -> repository -> data plane -> gRPC server."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from grpc_health.v1.health import aio as health_aio
from prometheus_client import CollectorRegistry, start_http_server

from backends.loader import get_backend
from runtime.version import attnserve_version
from serving.dataplane import DataPlane, labels_of
from serving.grpc.attention_servicer import AttentionServicer
from serving.grpc.inference_servicer import InferenceServicer
from serving.grpc.server import NOT_SERVING, SERVING, GrpcServer
from serving.metrics import ServingMetrics, TritonCompatCollector
from serving.repository import ModelRepository, State
from serving.settings import ServerSettings
from serving.stats import StatsRegistry

log = logging.getLogger(__name__)


class App:
    """The server process: build inside a running event loop, `await start()`, `await stop()`."""

    def __init__(self, settings: ServerSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.grpc.workers, thread_name_prefix="attnserve")
        self.stats = StatsRegistry()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServingMetrics(self.registry, tuple(settings.metrics.buckets))
        self.repository = ModelRepository(settings.repository, get_backend, settings.backend, settings.device)
        self.dataplane = DataPlane(
            self.repository, self.executor, self.stats, self.metrics, settings.grpc.inline_when_idle,
            settings.grpc.workers,
        )  # fmt: skip
        if settings.metrics.triton_names:
            self.registry.register(TritonCompatCollector(self.stats, self.metrics.inflight_by_model))
        self.metrics_server: object | None = None
        self.metrics_port = 0
        self.health = health_aio.HealthServicer()
        self.ready = False
        inference = InferenceServicer(
            self.repository, self.dataplane, self.stats, attnserve_version(), lambda: self.ready, self._model_changed
        )
        self.grpc = GrpcServer(settings.grpc, inference, AttentionServicer(self.dataplane), self.health)
        self.port = 0

    async def start(self) -> int:
        """Bind, load the models, then report ready. Returns the gRPC port."""
        self.port = await self.grpc.start()
        await self.health.set("", NOT_SERVING)
        if self.settings.metrics.enabled:
            httpd, _ = start_http_server(self.settings.metrics.port, self.settings.metrics.host, self.registry)
            self.metrics_server, self.metrics_port = httpd, httpd.server_address[1]
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.repository.load_all, self.settings.models or None)
        for entry in self.repository.index():
            await self._set_health(entry.name)
        self.ready = True
        await self.health.set("", SERVING)
        log.info("attnserve ready on port %d with %d model(s)", self.port, len(self.repository.index()))
        return self.port

    async def stop(self) -> None:
        self.ready = False
        await self.grpc.stop(self.settings.grace_seconds)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()  # type: ignore[attr-defined]
            self.metrics_server.server_close()  # type: ignore[attr-defined]
        self.repository.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def run_forever(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain and return."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        print(f"attnserve: serving gRPC on port {self.port}, metrics on port {self.metrics_port}", flush=True)
        await stop.wait()
        log.info("shutting down: draining in-flight calls for up to %.1f s", self.settings.grace_seconds)
        await self.stop()

    def _model_changed(self, name: str) -> None:
        asyncio.get_running_loop().create_task(self._set_health(name))

    async def _set_health(self, name: str) -> None:
        entry = self.repository.entry(name)
        ready = entry is not None and entry.state is State.READY
        await self.health.set(name, SERVING if ready else NOT_SERVING)
        self.metrics.forget_model(name)
        for version in entry.versions.values() if entry else ():
            for backend, facts in version.describe().items():
                # the device actually used: an ONNX Runtime model that fell back to CPU reports cpu
                device = "cpu" if facts.get("cpu_fallback") else version.config.device
                labels = labels_of(version, backend)
                self.metrics.set_ready(labels._replace(device=device), ready)


async def serve(settings: ServerSettings) -> None:
    """Build the app in the running loop (grpc.aio binds to it) and serve until a signal."""
    await App(settings).run_forever()
