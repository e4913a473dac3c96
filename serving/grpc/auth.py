"""Access to the gRPC methods: bearer-token scopes, the model control mode, and TLS credentials.

Probes stay open: `grpc.health.v1.Health` and ServerLive/ServerReady answer without a token, so
Kubernetes and load balancers can check a server whose other methods need one. Load and unload
need the `control` scope (and `model_control_mode: explicit`); every other method, including
ones the server does not know, needs `infer`.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from runtime.errors import ControlDisabled, ServingError
from serving.grpc.interceptors import STATUS, end_call
from serving.model_control import CONTROL_DISABLED
from serving.security import Scope, TlsFiles, TokenTable
from serving.settings import ServerSettings

OIP = "/inference.GRPCInferenceService/"
OPEN = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", f"{OIP}ServerLive", f"{OIP}ServerReady"}
)
MODEL_CONTROL = frozenset({f"{OIP}RepositoryModelLoad", f"{OIP}RepositoryModelUnload"})
# admin RPCs attnserve answers UNIMPLEMENTED: still nothing an inference token may reach
CONTROL = MODEL_CONTROL | {
    f"{OIP}{name}"
    for name in (
        "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
        "TraceSetting", "LogSettings",
    )
}  # fmt: skip


def scope_of(method: str) -> Scope | None:
    """The scope a full method name needs; None for the open probes."""
    if method in OPEN:
        return None
    return Scope.CONTROL if method in CONTROL else Scope.INFER


class AccessInterceptor(aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints: its base is Any
    """Refuse a call before its handler runs: UNAUTHENTICATED / PERMISSION_DENIED for tokens,
    FAILED_PRECONDITION for load/unload while model control is off.

    Must come before ErrorInterceptor, which reuses a method's handler without asking the
    interceptors after it.
    """

    def __init__(
        self, tokens: TokenTable | None, model_control: bool, on_refusal: Callable[[str, str], None] | None = None
    ) -> None:
        self.tokens = tokens
        self.model_control = model_control
        self.on_refusal = on_refusal  # (method label, status code name) of each refused call

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        try:
            if self.tokens is not None:
                scope = scope_of(method)
                if scope is not None:
                    name = method.rsplit("/", 1)[-1] or method
                    self.tokens.authorize(_authorization(details.invocation_metadata), scope, name)
            if not self.model_control and method in MODEL_CONTROL:
                raise ControlDisabled(CONTROL_DISABLED)
        except ServingError as exc:
            handler = await continuation(details)
            if self.on_refusal is not None:
                self.on_refusal(method_label(method, handler is not None), exc.code.name)
            return _refusal(handler, exc)
        return await continuation(details)


def method_label(method: str, known: bool) -> str:
    """A method's name for metric labels: "ModelInfer" for the Open Inference Protocol's (as REST
    names its routes), "<service>/<method>" for the others, "unknown" for a name the server does
    not serve (a client's invention never makes a series)."""
    if not known:
        return "unknown"
    if method.startswith(OIP):
        return method[len(OIP) :]
    return method.lstrip("/")


def _authorization(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _refusal(handler: grpc.RpcMethodHandler | None, exc: ServingError) -> grpc.RpcMethodHandler:
    """A handler of the method's own kind that answers `exc` through the one status table."""
    code, message = STATUS[exc.code], exc.message

    async def refuse(request: Any, context: aio.ServicerContext) -> None:
        await end_call(context, code, message)

    if handler is None:  # an unknown method: refused the same way, its existence not confirmed
        return grpc.unary_unary_rpc_method_handler(refuse)
    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse, **kw)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse, **kw)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    return grpc.stream_stream_rpc_method_handler(refuse, **kw)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """TLS server credentials; under mutual TLS, client certificates signed by the client CA are required."""
    return grpc.ssl_server_credentials(
        [(files.key, files.cert_chain)],
        root_certificates=files.client_ca,
        require_client_auth=files.settings.require_client_auth,
    )


@dataclass(frozen=True)
class Access:
    """What the settings say about access, checked: token table, TLS files, interceptors, credentials.

    Built before anything binds: an unreadable or mismatched certificate or key, or a malformed
    tokens file, raises ValueError with the setting's name.
    """

    tokens: TokenTable | None
    tls: TlsFiles | None
    model_control: bool

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Access:
        tls = TlsFiles.load(settings.tls) if settings.tls.enabled else None
        return cls(TokenTable.from_settings(settings.auth), tls, settings.model_control_mode == "explicit")

    def interceptors(self, on_refusal: Callable[[str, str], None] | None = None) -> list[aio.ServerInterceptor]:
        """The access interceptor, reporting each refusal to `on_refusal(method label, code name)`."""
        if self.tokens is None and self.model_control:
            return []  # nothing to refuse: no per-call cost
        return [AccessInterceptor(self.tokens, self.model_control, on_refusal)]

    @property
    def credentials(self) -> grpc.ServerCredentials | None:
        return server_credentials(self.tls) if self.tls is not None else None

    def metrics_ssl_context(self) -> ssl.SSLContext | None:
        """The HTTPS context of the metrics endpoint; None: plaintext (no TLS, or tls.metrics off)."""
        return self.tls.ssl_context() if self.tls is not None and self.tls.settings.metrics else None

    def describe(self) -> str:
        """One log line; names scopes, never tokens."""
        if self.tls is None:
            transport = "plaintext"
        else:
            transport = "mutual TLS" if self.tls.settings.require_client_auth else "TLS"
        protected = sorted(s.value for s in self.tokens.protected) if self.tokens else []
        tokens = f"tokens required for {', '.join(protected)}" if protected else "no tokens"
        mode = "explicit" if self.model_control else "none"
        return f"{transport}; {tokens}; model control {mode}"

    @property
    def control_open(self) -> bool:
        """Anyone who reaches the port may load and unload models."""
        return self.model_control and (self.tokens is None or Scope.CONTROL not in self.tokens.protected)
