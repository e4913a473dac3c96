"""Reading a server's /metrics, and asking a Prometheus that scrapes it."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class _Scraped(Protocol):
    """A server in this process (helpers.server.RunningServer)."""

    app: Any

    def settle(self) -> None: ...


def scrape(srv: _Scraped) -> str:
    """The text of the server's /metrics, once the metrics of the last response are recorded."""
    srv.settle()  # the last response's metrics are recorded just after it is sent
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.app.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(text: str, name: str) -> list[Sample]:
    """The samples named `name` in an exposition text."""
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def query(base: str, expr: str) -> list[dict[str, Any]]:
    """The result vector of a PromQL instant query against the Prometheus at `base` (http://host:port)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]
