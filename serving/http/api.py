"""The KServe V2 REST endpoints over the model repository and the data plane (thin, like the servicers).

    GET  /v2                                         server metadata
    GET  /v2/health/live | /v2/health/ready          200, or 503 when not ready (or draining)
    GET  /v2/models/{name}[/versions/{v}]            model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready      200, or 503 when not ready
    POST /v2/models/{name}[/versions/{v}]/infer      inference (serving.http.codec)

Errors answer {"error": message} with the status of serving.http.errors.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from runtime.errors import InvalidInput
from serving.dataplane import DataPlane
from serving.describe import EXTENSIONS, SERVER_NAME, model_metadata, model_ready
from serving.http import codec
from serving.http.errors import HttpError
from serving.repository import ModelRepository
from serving.security import Scope, TokenTable

JSON = "application/json"
BINARY = "application/octet-stream"
# compressed bodies above this are inflated on a worker thread (zlib releases the GIL)
INLINE_INFLATE_BYTES = 64 * 2**10


@dataclass
class Request:
    """One HTTP request as the server hands it over: header names are lower case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: list[bytes]
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, doc: Any) -> Response:
        return cls(status, [json.dumps(doc, separators=(",", ":")).encode()], [("content-type", JSON)])


@dataclass(frozen=True)
class Route:
    """A resolved endpoint: `handle(request)`. Probes keep answering while the server stops; open
    routes (server liveness and readiness, as over gRPC) need no token."""

    handle: Callable[[Request], Awaitable[Response]]
    probe: bool = False
    open: bool = False


class RestApi:
    """Resolves request targets to endpoints and answers them."""

    def __init__(
        self,
        repository: ModelRepository,
        dataplane: DataPlane,
        version: str,
        is_ready: Callable[[], bool],
        is_draining: Callable[[], bool],
        max_body_bytes: int,
        max_json_bytes: int,
        tokens: TokenTable | None = None,
    ) -> None:
        self.repository = repository
        self.tokens = tokens  # bearer tokens (serving.security); None: every endpoint is open
        self.dataplane = dataplane
        self.version = version
        self.is_ready = is_ready
        self.is_draining = is_draining
        self.max_body_bytes = max_body_bytes
        self.max_json_bytes = max_json_bytes

    def resolve(self, method: str, target: str) -> Route:
        """The route of `method target`; HttpError 404 (no such endpoint) or 405 (wrong method)."""
        path = target.split("?", 1)[0]
        try:
            parts = [unquote(p, errors="strict") if "%" in p else p for p in path.split("/")[1:]]
        except UnicodeDecodeError:
            raise HttpError(400, "the request path is not UTF-8 once percent-decoded") from None
        if parts[:1] != ["v2"]:
            raise HttpError(404, f"no endpoint {path[:200]!r}; the API is under /v2")
        rest = parts[1:]
        if rest in ([], [""]):
            return _only("GET", method, Route(self.server_metadata))
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            return _only("GET", method, Route(self.live if rest[1] == "live" else self.ready, probe=True, open=True))
        if rest[0] == "models" and len(rest) >= 2:
            name, version, tail = rest[1], "", rest[2:]
            if tail[:1] == ["versions"] and len(tail) >= 2:
                version, tail = tail[1], tail[2:]
            if tail == []:
                return _only("GET", method, Route(lambda r: self.model_metadata(name, version)))
            if tail == ["ready"]:
                return _only("GET", method, Route(lambda r: self.model_ready(name, version), probe=True))
            if tail == ["infer"]:
                return _only("POST", method, Route(lambda r: self.infer(r, name, version)))
        raise HttpError(404, f"no endpoint {path[:200]!r}")

    def authorize(self, route: Route, method: str, path: str, authorization: str | None) -> None:
        """Unauthenticated / PermissionDenied unless the `authorization` header's bearer token grants
        the `infer` scope (when tokens protect it); open routes pass. There is no control endpoint."""
        if self.tokens is not None and not route.open:
            self.tokens.authorize(authorization, Scope.INFER, f"{method} {path[:200]}")

    # --- health and metadata ---------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return Response.json(200, {"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.is_ready()
        return Response.json(200 if ready else 503, {"ready": ready})

    async def server_metadata(self, request: Request) -> Response:
        extensions = [*EXTENSIONS, "binary_tensor_data"]
        return Response.json(200, {"name": SERVER_NAME, "version": self.version, "extensions": extensions})

    async def model_metadata(self, name: str, version: str) -> Response:
        md = model_metadata(self.repository, name, version)
        tensors = [
            [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]
            for specs in (md.inputs, md.outputs)
        ]
        doc = {"name": md.name, "versions": list(md.versions), "platform": md.platform}
        doc |= {"inputs": tensors[0], "outputs": tensors[1]}
        return Response.json(200, doc | ({"parameters": md.parameters} if md.parameters else {}))

    async def model_ready(self, name: str, version: str) -> Response:
        ready = model_ready(self.repository, name, version, self.is_draining())
        return Response.json(200 if ready else 503, {"name": name, "ready": ready})

    # --- inference -------------------------------------------------------------------

    async def infer(self, request: Request, name: str, version: str) -> Response:
        body = await self._inflate(request)
        header_length = _header_length(request.headers.get(codec.HEADER_LENGTH), len(body))
        json_length = header_length if isinstance(header_length, int) else len(body)
        if json_length > self.max_json_bytes:
            raise HttpError(
                413,
                f"the JSON part of the request has {json_length} bytes, over the limit of {self.max_json_bytes}; "
                "send large tensors as binary data (Inference-Header-Content-Length, binary_data_size)",
            )
        # counted from here on, every outcome (as gRPC counts a request once it is received)
        with self.dataplane.track(name) as record:
            # an unknown model is 404, whatever the body holds; the model checks the tensors' headers
            pipeline = self.repository.get(name, version).pipeline
            if isinstance(header_length, str):
                raise InvalidInput(header_length)
            decoded = codec.parse_request(body, header_length, pipeline.check_headers, pipeline.max_item_bytes)
            result = await self.dataplane.infer(
                name, version, decoded.inputs, decoded.params, decoded.outputs, record=record
            )
            chunks, json_size = codec.encode_response(
                decoded, result.model.config.name, str(result.model.version), result.backend, result.outputs
            )
        if json_size is None:
            return Response(200, chunks, [("content-type", JSON)])
        return Response(200, chunks, [("content-type", BINARY), (codec.HEADER_LENGTH, str(json_size))])

    async def _inflate(self, request: Request) -> bytes:
        """The body, inflated when it came gzip- or deflate-encoded (bounded by the body limit)."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "identity":
            return request.body
        if encoding not in ("gzip", "deflate"):
            raise HttpError(415, f"unsupported Content-Encoding {encoding[:40]!r}; use gzip, deflate or none")
        wbits = 31 if encoding == "gzip" else 15
        limit = self.max_body_bytes
        if len(request.body) <= INLINE_INFLATE_BYTES:
            data = _inflate(request.body, wbits, limit)
        else:
            data = await asyncio.get_running_loop().run_in_executor(None, _inflate, request.body, wbits, limit)
        if data is None:
            raise HttpError(413, f"the request body inflates to over {limit} bytes, the limit")
        return data


def _inflate(data: bytes, wbits: int, limit: int) -> bytes | None:
    """`data` inflated, or None when it inflates to more than `limit` bytes (never allocated)."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(
            f"the request body is not valid {'gzip' if wbits == 31 else 'deflate'} data: {exc}"
        ) from None
    if len(out) > limit or inflater.unconsumed_tail:
        return None
    return out


def _header_length(value: str | None, body_length: int) -> int | str | None:
    """The Inference-Header-Content-Length, None when absent, or what is wrong with it."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 12) or int(value) > body_length:
        return f"Inference-Header-Content-Length must be an integer of at most the body's {body_length} bytes"
    return int(value)


def _only(allowed: str, method: str, route: Route) -> Route:
    if method != allowed:
        raise HttpError(405, f"use {allowed} here, not {method[:16]}", (("allow", allowed),))
    return route
