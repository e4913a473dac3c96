"""The metrics endpoint over HTTPS (and mutual TLS), without prometheus_client's TLS mode.

prometheus_client's `start_http_server(certfile=...)` completes each TLS handshake inside its
accept loop, with no timeout: one idle TCP connection stops the endpoint for every scraper
(measured: a scrape behind an idle connection timed out). Here the listener accepts at once and
each connection's thread does its own handshake, under `timeout`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer, _get_best_family, _SilentHandler

log = logging.getLogger(__name__)


class _QuietServer(ThreadingWSGIServer):
    """A failed handshake (plaintext, no or wrong client certificate, a timeout) is the client's
    problem: one debug line, not socketserver's traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: connection from %s closed during TLS", client_address[0], exc_info=True)


def start_metrics_server(
    port: int, host: str, registry: CollectorRegistry, context: ssl.SSLContext | None
) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """prometheus_client's plaintext server when `context` is None, else `start_https_server`."""
    if context is None:
        return start_http_server(port, host, registry)
    return start_https_server(port, host, registry, context)


def start_https_server(
    port: int, host: str, registry: CollectorRegistry, context: ssl.SSLContext, timeout: float = 10.0
) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Serve `registry` at https://host:port/metrics in a daemon thread; same return as start_http_server."""
    handler = type("_TimedHandler", (_SilentHandler,), {"timeout": timeout})
    family, address = _get_best_family(host, port)  # as start_http_server does: IPv6 hosts work
    server = type("_Server", (_QuietServer,), {"address_family": family})
    httpd = make_server(address, port, make_wsgi_app(registry), server, handler_class=handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="attnserve-metrics-tls")
    thread.start()
    return httpd, thread
