"""An HTTP/1.1 server on the event loop that runs grpc.aio: h11 parses the protocol, this module
does the I/O, the limits and the stop.

Every limit is a setting (serving.settings.HttpSettings): connections (more get 503 and are
closed), the request head (431), the body (413, refused from its Content-Length before it is
read, or as soon as a chunked body passes the limit), and time: a keep-alive connection idle too
long is closed, a request's head and its body must each arrive in time (408), and a response must
be taken by the client in time. A connection carries one request at a time. A client that closes
its connection while its request is handled has left: the request is cancelled, as a gRPC call
whose client leaves (dropped from a model's queue, or its batch stops once all its callers left).

Stop: the listening socket closes at once; requests already being handled finish (within the
grace period, then they are cancelled); later requests on open connections get 503 (probes
still answer) and their connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from ssl import SSLContext

import h11

from runtime.errors import ErrorCode, ServingError, shown
from serving.http.api import Request, Response, RestApi, Route
from serving.http.errors import HttpError, status_of
from serving.settings import HttpSettings

log = logging.getLogger(__name__)

READ_SIZE = 256 * 2**10
# after an early answer, what the client still sends is read and dropped, this long and this much
LINGER_SECONDS = 2.0
REFUSAL_LINGER_SECONDS = 0.5  # a connection refused at the door (over the cap) costs little
LINGER_BYTES = 64 * 2**20
SHUTTING_DOWN = "attnserve is shutting down; send the request to another replica"
TOO_MANY = "too many connections to attnserve's HTTP port; retry later"


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection


class HttpServer:
    """Owns the listening socket. `start` binds and returns the port; `stop` drains within a grace period."""

    def __init__(self, settings: HttpSettings, api: RestApi, ssl: SSLContext | None = None) -> None:
        self.settings = settings
        self.api = api
        self.ssl = ssl  # HTTPS (the gRPC port's certificate and client-certificate policy)
        self.port = 0
        self.active = 0  # requests being handled (head received, response not yet sent)
        self.refused = 0  # requests and connections answered 503 because the server was stopping
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        self._idle: asyncio.Event | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._accept, self.settings.host, self.settings.port,
            ssl=self.ssl, ssl_handshake_timeout=self.settings.header_timeout_seconds if self.ssl else None,
        )  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self, grace: float) -> bool:
        """Stop listening, let requests being handled finish for up to `grace` seconds, then close
        every connection. Returns True when every request finished in time."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        finished = True
        if self.active:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                finished = False
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return finished

    # --- connections -----------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or len(self._connections) >= self.settings.max_connections:
            self.refused += self._closing
            await self._refuse(reader, writer, SHUTTING_DOWN if self._closing else TOO_MANY)
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        protocol = h11.Connection(h11.SERVER, max_incomplete_event_size=self.settings.max_header_bytes)
        conn = _Connection(reader, writer, protocol)
        try:
            await self._serve(conn)
        except (ConnectionError, TimeoutError, h11.RemoteProtocolError):
            pass  # the client went away, was too slow, or broke the protocol mid-body
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._connections.discard(task)
            if conn.h11.their_state in (h11.SEND_BODY, h11.ERROR) and not self._closing:
                await _linger(reader, writer, LINGER_SECONDS)
            writer.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await _linger(reader, writer, REFUSAL_LINGER_SECONDS)
        writer.close()

    async def _serve(self, c: _Connection) -> None:
        """Requests one after another until the client closes, an error closes, or the server stops."""
        while True:
            request = await self._read_head(c)
            if request is None or not await self._handle(c, request):
                return
            if c.h11.our_state is h11.MUST_CLOSE or c.h11.their_state is not h11.DONE:
                return
            c.h11.start_next_cycle()

    async def _read_head(self, c: _Connection) -> h11.Request | None:
        """The next request's head; None when the connection closes, idles out or sends garbage."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None  # set by the request's first bytes
        while True:
            try:
                event = c.h11.next_event()
            except h11.RemoteProtocolError as exc:  # malformed, or a head over max_header_bytes (431)
                message = f"malformed HTTP request: {shown(str(exc), 200)}"
                await self._send(c, _error(exc.error_status_hint, message), close=True)
                return None
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed
            timeout = self.settings.idle_timeout_seconds if deadline is None else deadline - loop.time()
            try:
                data = await asyncio.wait_for(c.reader.read(READ_SIZE), max(timeout, 0.0))
            except TimeoutError:
                return None  # idle keep-alive, or a head that dribbles in: close
            if deadline is None:
                deadline = loop.time() + self.settings.header_timeout_seconds
            c.h11.receive_data(data)

    async def _handle(self, c: _Connection, head: h11.Request) -> bool:
        """Answer one request; True when the connection may carry another."""
        method = head.method.decode("ascii", "replace")
        target = head.target.decode("ascii", "replace")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}
        try:
            # h11 bounds a head that arrives in pieces; this, one that arrived in a single read
            size = len(head.method) + len(head.target) + 12 + sum(len(k) + len(v) + 4 for k, v in head.headers)
            if size > self.settings.max_header_bytes:
                raise HttpError(431, f"the request head is over {self.settings.max_header_bytes} bytes")
            route = self.api.resolve(method, target)
            # before the body is read: a client without a valid token costs its head only
            self.api.authorize(route, method, target.split("?", 1)[0], headers.get("authorization"))
            length = headers.get("content-length")  # h11 has checked it is a number
            if length is not None and int(length) > self.settings.max_body_bytes:
                raise HttpError(413, self._too_large(length))
        except HttpError as exc:
            return await self._send(c, _error(exc.status, exc.message, exc.headers), close=True)
        except ServingError as exc:  # 401 / 403
            challenge = (("www-authenticate", "Bearer"),) if exc.code is ErrorCode.UNAUTHENTICATED else ()
            return await self._send(c, _error(status_of(exc), exc.message, challenge), close=True)
        if self._closing and not route.probe:
            self.refused += 1
            return await self._send(c, _error(503, SHUTTING_DOWN), close=True)
        self.active += 1
        try:
            try:
                body = await self._read_body(c)
            except HttpError as exc:
                return await self._send(c, _error(exc.status, exc.message), close=True)
            if body is None:
                return False
            response = await self._call_watched(c, route, Request(method, target, headers, body))
            if response is None:
                return False  # the client left; its request was cancelled
            return await self._send(c, response, close=self._closing)
        finally:
            self.active -= 1
            if self.active == 0 and self._idle is not None:
                self._idle.set()

    async def _read_body(self, c: _Connection) -> bytes | None:
        """The request body; None when the client closed; HttpError 413 past the limit, 408 late."""
        if c.h11.they_are_waiting_for_100_continue:
            c.writer.write(c.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        chunks: list[bytes] = []
        size, limit = 0, self.settings.max_body_bytes
        try:
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                while True:
                    event = c.h11.next_event()
                    if event is h11.NEED_DATA:
                        c.h11.receive_data(await c.reader.read(READ_SIZE))
                    elif isinstance(event, h11.Data):
                        size += len(event.data)
                        if size > limit:
                            raise HttpError(413, self._too_large("more"))
                        chunks.append(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        return b"".join(chunks)
                    else:
                        return None  # ConnectionClosed
        except TimeoutError:
            late = f"the request body did not arrive within {self.settings.body_timeout_seconds} s"
            raise HttpError(408, late) from None
        except h11.RemoteProtocolError as exc:
            raise HttpError(400, f"malformed HTTP request body: {shown(str(exc), 200)}") from None

    async def _call_watched(self, c: _Connection, route: Route, request: Request) -> Response | None:
        """`_call`, cancelled when the client closes the connection before the answer (None then).

        The connection is watched until the answer or the client's first further bytes (a pipelined
        request: the client is there; h11 keeps the bytes for the next cycle)."""
        task = asyncio.ensure_future(self._call(route, request))
        read = asyncio.ensure_future(c.reader.read(READ_SIZE))
        try:
            await asyncio.wait((task, read), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server stops: cancel both
            task.cancel()
            read.cancel()
            raise
        if not read.done():
            read.cancel()  # safe: a StreamReader keeps unread bytes
            return await task
        data = b"" if read.cancelled() or read.exception() is not None else read.result()
        if data:
            c.h11.receive_data(data)
            return await task
        if task.done():
            return task.result()
        task.cancel()  # end of stream: the client left
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _call(self, route: Route, request: Request) -> Response:
        try:
            return await route.handle(request)
        except ServingError as exc:
            return _error(status_of(exc), exc.message)
        except HttpError as exc:
            return _error(exc.status, exc.message, exc.headers)
        except Exception:
            log.exception("unexpected error in HTTP %s %s", request.method, request.path[:200])
            return _error(500, f"internal error in {request.method} {request.path[:200]}; see the server log")

    async def _send(self, c: _Connection, response: Response, close: bool) -> bool:
        """Write the response (within body_timeout_seconds); True when the connection stays open."""
        if c.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        length = sum(len(chunk) for chunk in response.body)
        headers = [*response.headers, ("content-length", str(length))]
        if close:
            headers.append(("connection", "close"))
        reason = HTTPStatus(response.status).phrase.encode()
        c.writer.write(c.h11.send(h11.Response(status_code=response.status, headers=headers, reason=reason)))
        for chunk in response.body:
            if chunk:
                c.writer.writelines(c.h11.send_with_data_passthrough(h11.Data(data=chunk)))  # type: ignore[arg-type]  # None only after ConnectionClosed
        c.writer.write(c.h11.send(h11.EndOfMessage()))
        await asyncio.wait_for(c.writer.drain(), self.settings.body_timeout_seconds)
        return not close

    def _too_large(self, size: str) -> str:
        return (
            f"the request body has {size} bytes, over the limit of {self.settings.max_body_bytes} "
            "(setting http.max_body_bytes)"
        )


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float) -> None:
    """After an answer given before the request was read to its end (413, 431, 400, 503 at the
    door): stop writing and read what the client still sends, for a while, so that closing does
    not reset the connection and destroy the answer before the client reads it."""
    with contextlib.suppress(ConnectionError, TimeoutError, RuntimeError):
        async with asyncio.timeout(seconds):
            await writer.drain()
            writer.write_eof()
            drained = 0
            while drained < LINGER_BYTES and (chunk := await reader.read(READ_SIZE)):
                drained += len(chunk)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    response = Response.json(status, {"error": message})
    response.headers.extend(headers)
    return response
