"""Python clients for an attnserve server: the Open Inference Protocol and the typed `attnserve.v1.Attention`.

`Client` is synchronous, `AsyncClient` runs on grpc.aio; both offer the same methods:

    with Client("localhost:8001") as c:
        c.models()                                       # [{"name", "version", "state", "reason"}]
        c.infer("sort-pointer", {"values": np.array([[3, 1, 2]])})["order"]
        c.translate("dates-transformer", ["14 de març 2003"], return_attention=True)[0].attention.weights

Tensors travel raw (row-major little-endian; BYTES as 4-byte length-prefixed items) and come back
as numpy arrays, BYTES as object arrays of `bytes`. A failed call raises ClientError with the gRPC
status name and the server's message. TLS and tokens: `Client(address, ca="ca.pem",
cert="client.pem", key="client.key", token=...)`. Nothing here imports torch.

Several replicas: `Client("10.0.0.1:8001,10.0.0.2:8001")` (or `dns:///name:8001`) balances calls
round-robin and, for a list, leaves a replica out while its health says NOT_SERVING (draining).
Inference and metadata calls answered UNAVAILABLE are retried (`RetryPolicy`, see
client/channel.py; `retry=None` turns it off). `wait_for_ready=True` makes calls wait for a
connection instead of failing at once; `metadata={"x-team": "a"}` adds headers to every call.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, Generic, Literal, NamedTuple, ParamSpec, TypeVar

import grpc
import numpy as np

from client.channel import RetryPolicy, call_metadata, configure
from protocol import codec
from protocol.gen.attnserve.v1 import attention_pb2 as apb
from protocol.gen.attnserve.v1 import attention_pb2_grpc as apb_grpc
from protocol.gen.inference import grpc_service_pb2 as pb
from protocol.gen.inference import grpc_service_pb2_grpc as pb_grpc
from runtime.attention_map import AttentionMap

MAX_MESSAGE = 2**31 - 1
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
DEFAULT_RETRY = RetryPolicy()  # up to 5 attempts on UNAVAILABLE, backoff 0.1 s doubling to 1 s
ROW_LABEL_CHARS = 40  # hierarchical maps: sentence row labels cut to this many characters
P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class ClientError(Exception):
    """A failed call: `code` is the gRPC status name (e.g. "NOT_FOUND"), `message` the server's text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _error(exc: grpc.RpcError) -> ClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else None
    return ClientError(code.name if code is not None else "UNKNOWN", details or str(exc))


def _credentials(
    tls: bool, ca: str | Path | None, cert: str | Path | None, key: str | Path | None
) -> grpc.ChannelCredentials | None:
    """Channel credentials from PEM files; None for a plaintext channel."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    if not (tls or ca or cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
    )


def _read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def _call_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def _headers(token: str | None, metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...] | None:
    """The token's authorization header plus `metadata`; None when there is nothing to send."""
    extra = call_metadata(metadata)
    if token and any(name == "authorization" for name, _ in extra):
        raise ValueError("give the token either as `token` or as an authorization header, not both")
    return (*(_call_metadata(token) or ()), *extra) or None


# --- results of the typed service ---------------------------------------------------------


class Sentence(NamedTuple):
    """One sentence of a classified document: its words, their weights, and its weight in the document."""

    words: list[str]
    word_weights: np.ndarray  # FP32 [len(words)]
    weight: float


@dataclass(frozen=True)
class Translation:
    text: str
    attention: AttentionMap | None = None  # rows: output tokens (with "</s>"), cols: input characters


@dataclass(frozen=True)
class Classification:
    label: str
    probabilities: dict[str, float]
    sentences: list[Sentence]  # empty unless return_attention

    def attention_map(self) -> AttentionMap | None:
        """The HAN picture for client.plot.plot: word weights [S, W] plus sentence weights in `extra`."""
        if not self.sentences:
            return None
        words = [list(s.words) for s in self.sentences]
        width = max((len(w) for w in words), default=0) or 1
        weights = np.zeros((len(words), width), dtype=np.float32)
        for i, s in enumerate(self.sentences):
            weights[i, : len(s.word_weights)] = s.word_weights
        rows = [" ".join(w) for w in words]
        return AttentionMap(
            rows=[r if len(r) <= ROW_LABEL_CHARS else r[: ROW_LABEL_CHARS - 1] + "…" for r in rows],
            cols=[str(i) for i in range(width)],
            weights=weights,
            prediction=self.label,
            extra={
                "sentence_weights": [s.weight for s in self.sentences],
                "words": words,
                "probabilities": dict(self.probabilities),
            },
        )


@dataclass(frozen=True)
class Sorted:
    order: list[int]  # indices into the input, in sorted order
    values: list[int]  # the input values in that order
    attention: AttentionMap | None = None  # rows: decoding steps (the value picked), cols: input values


# --- responses and requests of both clients -----------------------------------------------


def _index(response: pb.RepositoryIndexResponse) -> list[dict[str, str]]:
    return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in response.models]


def _metadata(response: pb.ModelMetadataResponse) -> dict[str, Any]:
    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": response.name,
        "versions": list(response.versions),
        "platform": response.platform,
        "inputs": tensors(response.inputs),
        "outputs": tensors(response.outputs),
    }


def _is_ready(response: Any) -> bool:
    return bool(response.ready)


def _texts(texts: str | Sequence[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _map(msg: apb.AttentionMap, prediction: str) -> AttentionMap:
    rows, cols = list(msg.rows), list(msg.cols)
    weights = np.array(msg.weights, dtype=np.float32)
    if weights.size != len(rows) * len(cols):
        raise ValueError(f"attention map has {weights.size} weights for {len(rows)} x {len(cols)} labels")
    return AttentionMap(rows=rows, cols=cols, weights=weights.reshape(len(rows), len(cols)), prediction=prediction)


def _translations(response: apb.TranslateResponse, with_attention: bool) -> list[Translation]:
    return [
        Translation(text=t.text, attention=_map(t.attention, t.text) if with_attention else None)
        for t in response.translations
    ]


def _classifications(response: apb.ClassifyResponse) -> list[Classification]:
    results = []
    for r in response.results:
        sentences = [
            Sentence(list(s.words), np.array(s.word_weights, dtype=np.float32), float(s.weight)) for s in r.sentences
        ]
        results.append(Classification(label=r.label, probabilities=dict(r.probabilities), sentences=sentences))
    return results


def _sorted(response: apb.SortResponse, with_attention: bool) -> list[Sorted]:
    results = []
    for r in response.results:
        values = [int(v) for v in r.values]
        amap = _map(r.attention, " ".join(map(str, values))) if with_attention else None
        results.append(Sorted(order=[int(p) for p in r.order], values=values, attention=amap))
    return results


def _sort_request(model: str, rows: Any, return_attention: bool, backend: str) -> apb.SortRequest:
    request = apb.SortRequest(model=model, return_attention=return_attention, backend=backend)
    for row in np.atleast_2d(np.asarray(rows, dtype=np.int64)):
        request.values.add(values=[int(v) for v in row])
    return request


# --- the calls, written once for both clients -------------------------------------------


@dataclass(frozen=True)
class Call(Generic[R]):
    """One RPC: the stub (`inference` or `attention`) and method to call, the request, and how the
    response becomes the result."""

    stub: Literal["inference", "attention"]
    method: str
    request: Any
    result: Callable[[Any], R]


def _models() -> Call[list[dict[str, str]]]:
    """The repository index: one entry per model version (or per model without versions)."""
    return Call("inference", "RepositoryIndex", pb.RepositoryIndexRequest(), _index)


def _ready(model: str | None = None, version: str = "") -> Call[bool]:
    """Server readiness, or a model's (NOT_FOUND for a model the repository does not have)."""
    if model is None:
        return Call("inference", "ServerReady", pb.ServerReadyRequest(), _is_ready)
    return Call("inference", "ModelReady", pb.ModelReadyRequest(name=model, version=str(version)), _is_ready)


def _model_metadata(model: str, version: str = "") -> Call[dict[str, Any]]:
    """A model's name, versions, platform, inputs and outputs."""
    return Call("inference", "ModelMetadata", pb.ModelMetadataRequest(name=model, version=str(version)), _metadata)


def _infer(
    model: str,
    inputs: Mapping[str, Any],
    outputs: Sequence[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    version: str = "",
) -> Call[dict[str, np.ndarray]]:
    """ModelInfer with raw tensors; `outputs` None: every output the model has."""
    request = codec.infer_request(model, inputs, outputs, parameters, version)
    return Call("inference", "ModelInfer", request, codec.response_tensors)


def _translate(
    model: str,
    texts: str | Sequence[str],
    return_attention: bool = False,
    beam_size: int = 0,
    max_length: int = 0,
    backend: str = "",
) -> Call[list[Translation]]:
    """Translate each text; with `return_attention`, each result carries its attention map."""
    request = apb.TranslateRequest(
        model=model,
        texts=_texts(texts),
        return_attention=return_attention,
        beam_size=beam_size,
        max_length=max_length,
        backend=backend,
    )
    return Call("attention", "Translate", request, lambda r: _translations(r, return_attention))


def _classify(
    model: str, texts: str | Sequence[str], return_attention: bool = False, backend: str = ""
) -> Call[list[Classification]]:
    """Classify each document; with `return_attention`, its sentences and their weights."""
    request = apb.ClassifyRequest(model=model, texts=_texts(texts), return_attention=return_attention, backend=backend)
    return Call("attention", "Classify", request, _classifications)


def _sort(model: str, rows: Any, return_attention: bool = False, backend: str = "") -> Call[list[Sorted]]:
    """Sort each row of integers (a single row may be given as a flat list)."""
    return Call(
        "attention",
        "Sort",
        _sort_request(model, rows, return_attention, backend),
        lambda r: _sorted(r, return_attention),
    )


# --- the clients: one constructor, each call made blocking or awaitable ---------------------


class _Channel:
    """The options both clients take, and the channel, stubs and per-call settings they give."""

    def __init__(
        self,
        address: str,
        timeout: float = 30.0,
        *,
        tls: bool = False,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        wait_for_ready: bool = False,
        metadata: Mapping[str, str] | None = None,
        health_check: bool | None = None,
    ) -> None:
        """`address`: host:port, a comma-separated list of them (round-robin), or a gRPC target
        such as dns:///name:port. `health_check` (default: on for a list) keeps calls off replicas
        whose grpc.health.v1 status is not SERVING.

        TLS when `tls` or any of `ca` (PEM roots; default: the system's), `cert` + `key` (a client
        certificate, for mutual TLS); `token` is sent as `authorization: Bearer <token>` on every call."""
        self.address = address
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
        self.call_metadata = _headers(token, metadata)
        credentials = _credentials(tls, ca, cert, key)
        self.target, options = configure(address, retry, health_check)
        self.channel = self._open(self.target, credentials, [*CHANNEL_OPTIONS, *options])
        self.inference = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.attention = apb_grpc.AttentionStub(self.channel)

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> Any:
        raise NotImplementedError

    def _invoke(self, call: Call[Any]) -> Any:
        """Start `call` with this client's timeout, headers and wait_for_ready (grpc.aio: awaitable)."""
        method = getattr(self.inference if call.stub == "inference" else self.attention, call.method)
        return method(
            call.request, timeout=self.timeout, metadata=self.call_metadata, wait_for_ready=self.wait_for_ready
        )


def _named(method: F, make: Callable[..., Any]) -> F:
    """`method` with the name and docstring of the call it sends."""
    method.__name__ = make.__name__.lstrip("_")
    method.__qualname__ = method.__name__
    method.__doc__ = make.__doc__
    return method


def _blocking(make: Callable[P, Call[R]]) -> Callable[Concatenate[Client, P], R]:
    """`make`'s call as a Client method: sent on the blocking channel, its result returned."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        call = make(*args, **kwargs)
        try:
            response = self._invoke(call)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return call.result(response)

    return _named(method, make)


def _awaitable(make: Callable[P, Call[R]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]:
    """`make`'s call as an AsyncClient coroutine: sent on the grpc.aio channel, its result returned."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        call = make(*args, **kwargs)
        try:
            response = await self._invoke(call)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return call.result(response)

    return _named(method, make)


class Client(_Channel):
    """Synchronous client; use as a context manager or call close()."""

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> Any:
        if credentials is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, credentials, options=options)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Open Inference Protocol
    models = _blocking(_models)
    ready = _blocking(_ready)
    metadata = _blocking(_model_metadata)
    infer = _blocking(_infer)
    # attnserve.v1.Attention
    translate = _blocking(_translate)
    classify = _blocking(_classify)
    sort = _blocking(_sort)


class AsyncClient(_Channel):
    """grpc.aio client with Client's options and methods, as coroutines; use `async with` or `await close()`."""

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> Any:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Open Inference Protocol
    models = _awaitable(_models)
    ready = _awaitable(_ready)
    metadata = _awaitable(_model_metadata)
    infer = _awaitable(_infer)
    # attnserve.v1.Attention
    translate = _awaitable(_translate)
    classify = _awaitable(_classify)
    sort = _awaitable(_sort)
