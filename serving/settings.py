"""Server settings. Precedence: CLI flags > environment (ATTNSERVE_*, nested with "__") > YAML file > defaults."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from serving.metrics import DEFAULT_BUCKETS
from serving.overrides import OverrideLimits
from serving.security import AuthSettings, TlsSettings
from serving.tracing import TracingSettings

INT32_MAX = 2**31 - 1
MAX_MESSAGE_BYTES = 32 * 2**20


class GrpcSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(8001, ge=0, le=65535)  # 0 = any free port (tests)
    # the largest request accepted (RESOURCE_EXHAUSTED above it; responses are not limited). The
    # default fits every reference model's largest valid request (debian-han: 64 documents of
    # 100,000 characters, 25.6 MB); tritonclient sets INT32_MAX on its side, this limit decides.
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, gt=0, le=INT32_MAX)
    workers: int = Field(4, gt=0)  # threads running pipelines and backends
    # run a batch-1 request on the event loop when nothing else computes (saves the thread hand-off);
    # turn off for many concurrent single-item clients on a many-core machine
    inline_when_idle: bool = True
    reflection: bool = True
    # gRPC core experiments (GRPC_EXPERIMENTS) that `attnserve serve` sets before gRPC loads; an
    # explicit GRPC_EXPERIMENTS in the environment wins. "-event_engine_listener" serves accepted
    # connections from the completion-queue poller instead of EventEngine's thread pool: about
    # half the thread switches per RPC (docs/performance.md). [] keeps gRPC's defaults.
    core_experiments: list[str] = ["-event_engine_listener"]


class HttpSettings(BaseModel):
    """KServe V2 REST (serving.http): the same data plane as gRPC, on its own port."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)  # Triton's HTTP port; 0 = any free port (tests)
    # a body over this is refused with 413 before it is read (large tensors: the binary extension)
    max_body_bytes: int = Field(32 * 2**20, gt=0, le=INT32_MAX)
    # the JSON part of a body (all of it without binary data): parsing holds the GIL, so the event
    # loop, for ~10-20 ms per MiB of numbers; tensors beyond this travel as binary data
    max_json_bytes: int = Field(4 * 2**20, gt=0)
    max_header_bytes: int = Field(16 * 2**10, gt=0)  # request line + headers; 431 above
    max_connections: int = Field(256, gt=0)  # connections beyond this get 503 and are closed
    idle_timeout_seconds: float = Field(60.0, gt=0)  # keep-alive: a connection idle this long is closed
    header_timeout_seconds: float = Field(10.0, gt=0)  # a request's head must arrive within this
    body_timeout_seconds: float = Field(60.0, gt=0)  # its body, and later its response, within this


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(8002, ge=0, le=65535)  # 0 = any free port (tests)
    # histogram bucket upper bounds in seconds (0.25 ms to 10 s by default)
    buckets: list[float] = Field(default_factory=lambda: list(DEFAULT_BUCKETS), min_length=1)
    triton_names: bool = False  # also export nv_inference_* (Triton's names) for existing dashboards
    # the endpoint serves from one thread (serving.metrics_endpoint): at most this many connections
    # are open; a newcomer past it closes the oldest one that has not sent its request (503 only
    # when all are being answered), and a connection that has not sent its request head within
    # timeout_seconds is closed, so idle or half-open connections cannot keep a scrape out
    max_connections: int = Field(64, gt=0)
    timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        if any(b <= 0 for b in v) or any(b >= c for b, c in itertools.pairwise(v)):
            raise ValueError("buckets must be positive and strictly increasing")
        return v


class ServerSettings(BaseSettings):
    """Every server setting; ATTNSERVE_GRPC__PORT=9001 sets grpc.port."""

    model_config = SettingsConfigDict(env_prefix="ATTNSERVE_", env_nested_delimiter="__", extra="forbid")

    repository: Path = Path("model_repository")
    models: list[str] = []  # load only these (default: every model in the repository)
    # max_batch_size of a graph whose config is completed and that batches (Triton's
    # --backend-config=default-max-batch-size, also 4)
    default_max_batch_size: int = Field(4, gt=0)
    backend: str | None = None  # make this backend every model's default
    device: Literal["cpu", "cuda"] | None = None  # override every model's device
    grace_seconds: float = Field(10.0, ge=0)  # SIGTERM: finish in-flight calls for this long
    # SIGTERM: not ready at once, but keep serving this long so load balancers notice (0 in tests)
    drain_delay_seconds: float = Field(5.0, ge=0)
    exit_on_error: bool = False  # exit non-zero at start-up when a model fails to load (Triton's flag)
    # "none": the models loaded at start-up are all there is (RepositoryModelLoad/Unload refused);
    # "explicit": clients may load and unload (protect it with a control token)
    model_control_mode: Literal["none", "explicit"] = "none"
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    grpc: GrpcSettings = GrpcSettings()
    http: HttpSettings = HttpSettings()
    metrics: MetricsSettings = MetricsSettings()
    overrides: OverrideLimits = OverrideLimits()  # ceilings on RepositoryModelLoad's `config` override
    tracing: TracingSettings = TracingSettings()  # OpenTelemetry spans per request (serving.tracing)


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServerSettings:
    """Defaults < config file < environment < explicit overrides (CLI flags); None values are skipped."""
    data: dict[str, Any] = {}
    if config_file is not None:
        _merge(data, yaml.safe_load(config_file.read_text()) or {})
    _merge(data, EnvSettingsSource(ServerSettings)())
    _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return ServerSettings.model_validate(data)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
