"""The Prometheus scrape endpoint (/metrics): one thread, bounded connections, timeouts, and a
scrape that is answered while idle connections are held.

prometheus_client's start_http_server runs a thread per connection with no timeout, so idle
connections pile up threads that then contend with inference for the GIL. Here one thread runs
its own event loop: a connection costs a socket and a coroutine. At most `max_connections` are
open: a newcomer past the bound closes the oldest connection that has not yet sent its request
head (an idle or half-open one: a scraper sends its request at once), and only when every open
connection is being answered is the newcomer refused with 503. A connection whose request head
has not arrived (or whose response has not been taken) within `timeout` seconds is closed; a head
over MAX_HEAD_BYTES is answered 431. Nothing here touches the gRPC server's event loop.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import ssl
import threading
from concurrent.futures import Future

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line and headers
PATHS = ("/metrics", "/")


def _response(status: str, body: bytes = b"", content_type: str = "text/plain; charset=utf-8", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


BUSY = _response("503 Service Unavailable", b"too many connections\n", Retry_After="1")
TOO_LARGE = _response(
    "431 Request Header Fields Too Large", f"the request head is over {MAX_HEAD_BYTES} bytes\n".encode()
)
# after a 431, what the client still sends is read and dropped (this much, within the timeout) so
# that closing does not reset the connection before the client reads the answer
LINGER_BYTES = 64 * 2**20


class MetricsEndpoint:
    """Serves `registry` over HTTP/1.1 (GET or HEAD /metrics) from its own thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        max_connections: int = 16,
        timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.active = 0  # connections open now (read on other threads by tests and benchmarks)
        self.refused = 0  # connections answered 503 because `max_connections` were open and answering
        self.evicted = 0  # idle connections closed to make room for a newcomer
        self.accepted = 0  # connections taken off the listening socket (served or refused)
        self.peak = 0  # the most connections served at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # open, request head not yet received: oldest first
        self._evicted: set[asyncio.StreamWriter] = set()  # closed by _evict_idle, already counted out

    def start(self) -> int:
        """Bind and serve in a new thread; returns the bound port."""
        bound: Future[int] = Future()
        self._thread = threading.Thread(target=self._run, args=(bound,), name="attnserve-metrics", daemon=True)
        self._thread.start()
        self.port = bound.result(timeout=30)
        return self.port

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    def _run(self, bound: Future[int]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._handle, self.host, self.port, limit=MAX_HEAD_BYTES, ssl=self.ssl_context,
                    ssl_handshake_timeout=self.timeout if self.ssl_context else None,
                )
            )  # fmt: skip
        except Exception as exc:
            bound.set_exception(exc)
            loop.close()
            return
        bound.set_result(self._server.sockets[0].getsockname()[1])
        try:
            loop.run_forever()
        finally:
            self._server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:  # the open connections' handlers end (their sockets are dropped)
                loop.run_until_complete(asyncio.wait(tasks))
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.active >= self.max_connections and not self._evict_idle():
            self.refused += 1
            writer.write(BUSY)
            writer.close()
            return
        self.active += 1
        self.peak = max(self.peak, self.active)
        self._waiting[writer] = None  # oldest first: the eviction order
        answered = False
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    self._waiting.pop(writer, None)
                    writer.write(TOO_LARGE)
                    await _linger(reader, writer)
                    answered = True
                    return
                self._waiting.pop(writer, None)
                writer.write(self._answer(head))
                await writer.drain()
                answered = True
        except (OSError, asyncio.IncompleteReadError):
            pass  # silent, slow, gone, evicted or not speaking TLS (timeouts and ssl errors are OSErrors): dropped
        except Exception:  # a bug here must not end the endpoint's loop
            log.exception("metrics endpoint: unexpected error")
        finally:
            self._waiting.pop(writer, None)
            if writer in self._evicted:
                self._evicted.discard(writer)  # counted out when it was evicted
            else:
                self.active -= 1
            if answered:
                writer.close()  # the response is in the kernel's buffer; close after it
            else:
                writer.transport.abort()

    def _evict_idle(self) -> bool:
        """Close the oldest connection that has not sent its request head; False when there is none."""
        for writer in self._waiting:
            del self._waiting[writer]
            writer.transport.abort()  # its reader fails, its handler ends and counts it out
            self.evicted += 1
            self.active -= 1  # counted out now: the newcomer takes its place at once
            self._evicted.add(writer)
            return True
        return False

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response("400 Bad Request", b"bad request line\n")
        method, target = parts[0], parts[1]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if target.split("?", 1)[0] not in PATHS:
            return _response("404 Not Found", b"metrics are at /metrics\n")
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"use GET\n", Allow="GET, HEAD")
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = encoder(self.registry)
        extra = {}
        if "gzip" in headers.get("accept-encoding", ""):
            body, extra = gzip.compress(body, compresslevel=1), {"Content_Encoding": "gzip"}
        response = _response("200 OK", body, content_type, **extra)
        return response[: len(response) - len(body)] if method == "HEAD" else response


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an answer given before the request was read to its end: stop writing and drop what
    the client still sends (bounded; the caller's timeout bounds the time)."""
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    dropped = 0
    while dropped < LINGER_BYTES:
        chunk = await reader.read(256 * 2**10)
        if not chunk:
            return
        dropped += len(chunk)
