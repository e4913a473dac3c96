"""The KServe V2 REST endpoints over the model repository and the data plane (thin, like the servicers).

    GET  /v2                                         server metadata
    GET  /v2/health/live | /v2/health/ready          200, or 503 when not ready (or draining)
    GET  /v2/models/{name}[/versions/{v}]            model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready      200, or 503 when not ready
    GET  /v2/models/{name}[/versions/{v}]/config     Triton's model configuration
    GET  /v2/models[/{name}[/versions/{v}]]/stats    Triton's inference statistics
    POST /v2/models/{name}[/versions/{v}]/infer      inference (serving.http.codec)
    POST /v2/repository/index                        the repository's models and their state
    POST /v2/repository/models/{name}/load | unload  model control (the `control` scope)

The answers are Triton's HTTP API's, from the same descriptions as the gRPC answers
(serving.describe, serving.model_control). Errors answer {"error": message} with the status
of serving.http.errors.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from runtime.errors import ControlDisabled, InvalidInput, ServingError, shown
from serving.dataplane import DataPlane
from serving.describe import (
    EXTENSIONS,
    SERVER_NAME,
    model_config,
    model_metadata,
    model_ready,
    model_statistics,
    repository_index,
)  # fmt: skip
from serving.http import codec
from serving.http.errors import HttpError
from serving.model_control import CONTROL_DISABLED, ModelControl
from serving.repository import ModelRepository
from serving.security import Scope, TokenTable
from serving.stats import StatsRegistry

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
    """A resolved endpoint: `handle(request)`. Probes keep answering while the server stops;
    `scope` is what a token must grant (None: open, as server liveness and readiness over gRPC)."""

    handle: Callable[[Request], Awaitable[Response]]
    name: str  # the Open Inference Protocol's name of the call (as gRPC's method): metric labels
    probe: bool = False
    scope: Scope | None = Scope.INFER


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


_B = TypeVar("_B", bound=_Body)


class IndexBody(_Body):
    """POST /v2/repository/index (Triton's RepositoryIndexRequest)."""

    repository_name: Annotated[StrictStr, Field(max_length=256)] = ""
    ready: StrictBool = False


class LoadBody(_Body):
    """POST .../load and .../unload: `parameters.config` (load) is a JSON string of config.yaml
    fields; other parameters (`unload_dependents`, files) are accepted and unused, as over gRPC."""

    parameters: dict[str, Any] = {}


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
        stats: StatsRegistry | None = None,
        control: ModelControl | None = None,
        on_refusal: Callable[[str, str], None] | None = None,
    ) -> None:
        self.repository = repository
        self.on_refusal = on_refusal  # (route name, status code name) of each call refused by authorize
        self.tokens = tokens  # bearer tokens (serving.security); None: every endpoint is open
        self.stats = stats if stats is not None else StatsRegistry()
        self.control = control  # None: model control is off (model_control_mode: none)
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
            raise HttpError(404, f"no endpoint {shown(repr(path))}; the API is under /v2")
        rest = parts[1:]
        if rest in ([], [""]):
            return _only("GET", method, Route(self.server_metadata, "ServerMetadata"))
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            live = rest[1] == "live"
            route = Route(self.live if live else self.ready, "ServerLive" if live else "ServerReady", True, None)
            return _only("GET", method, route)
        if rest == ["models", "stats"]:
            return _only("GET", method, Route(lambda r: self.statistics("", ""), "ModelStatistics"))
        if rest[0] == "models" and len(rest) >= 2:
            name, version, tail = rest[1], "", rest[2:]
            if tail[:1] == ["versions"] and len(tail) >= 2:
                version, tail = tail[1], tail[2:]
            if tail == []:
                return _only("GET", method, Route(lambda r: self.model_metadata(name, version), "ModelMetadata"))
            if tail == ["ready"]:
                return _only("GET", method, Route(lambda r: self.model_ready(name, version), "ModelReady", probe=True))
            if tail == ["infer"]:
                return _only("POST", method, Route(lambda r: self.infer(r, name, version), "ModelInfer"))
            if tail == ["config"]:
                return _only("GET", method, Route(lambda r: self.model_config(name, version), "ModelConfig"))
            if tail == ["stats"]:
                return _only("GET", method, Route(lambda r: self.statistics(name, version), "ModelStatistics"))
        if rest == ["repository", "index"]:
            return _only("POST", method, Route(self.repository_index, "RepositoryIndex"))
        if rest[0] == "repository" and len(rest) == 4 and rest[1] == "models" and rest[3] in ("load", "unload"):
            name, load = rest[2], rest[3] == "load"
            action = self.load if load else self.unload
            rpc = "RepositoryModelLoad" if load else "RepositoryModelUnload"
            return _only("POST", method, Route(lambda r: action(r, name), rpc, scope=Scope.CONTROL))
        raise HttpError(404, f"no endpoint {shown(repr(path))}")

    def authorize(self, route: Route, method: str, path: str, authorization: str | None) -> None:
        """Before the body is read, as gRPC's access interceptor: Unauthenticated / PermissionDenied
        unless the `authorization` header's bearer token grants the route's scope (when tokens
        protect it; open routes pass), then ControlDisabled for load/unload while model control is off.
        Each refusal is reported to `on_refusal` by route name and code (never the token or path)."""
        try:
            if self.tokens is not None and route.scope is not None:
                self.tokens.authorize(authorization, route.scope, f"{method} {path[:200]}")
            if route.scope is Scope.CONTROL and self.control is None:
                raise ControlDisabled(CONTROL_DISABLED)
        except ServingError as exc:
            if self.on_refusal is not None:
                self.on_refusal(route.name, exc.code.name)
            raise

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
        doc: dict[str, Any] = {"name": md.name, "versions": list(md.versions), "platform": md.platform}
        doc |= {"inputs": tensors[0], "outputs": tensors[1]}
        return Response.json(200, doc | ({"parameters": md.parameters} if md.parameters else {}))

    async def model_ready(self, name: str, version: str) -> Response:
        ready = model_ready(self.repository, name, version, self.is_draining())
        return Response.json(200 if ready else 503, {"name": name, "ready": ready})

    async def model_config(self, name: str, version: str) -> Response:
        return Response.json(200, model_config(self.repository.get(name, version)))

    async def statistics(self, name: str, version: str) -> Response:
        return Response.json(200, {"model_stats": model_statistics(self.repository, self.stats, name, version)})

    # --- repository ------------------------------------------------------------------

    async def repository_index(self, request: Request) -> Response:
        body = await self._json_body(request, IndexBody)
        return Response.json(200, repository_index(self.repository, body.ready))

    async def load(self, request: Request, name: str) -> Response:
        body = await self._json_body(request, LoadBody)
        config = body.parameters.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidInput("parameter 'config' must be a string: a JSON object of config.yaml fields")
        assert self.control is not None  # authorize() refused the call otherwise
        await self.control.load(name, config)
        return Response(200, [])

    async def unload(self, request: Request, name: str) -> Response:
        await self._json_body(request, LoadBody)
        assert self.control is not None
        self.control.unload(name)
        return Response(200, [])

    async def _json_body(self, request: Request, schema: type[_B]) -> _B:
        """A small JSON request body (empty: every field at its default); InvalidInput when malformed."""
        body = await self._inflate(request)
        if len(body) > self.max_json_bytes:
            raise HttpError(413, f"the request body has {len(body)} bytes, over the limit of {self.max_json_bytes}")
        if not body.strip():
            return schema()
        try:
            return schema.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InvalidInput(f"malformed request body at {shown(where)}: {first['msg']}") from None

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
            raise HttpError(415, f"unsupported Content-Encoding {shown(repr(encoding))}; use gzip, deflate or none")
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
