"""Credentials that rotate without a restart: the tokens file is polled and reloaded.

Every `interval` seconds the watched files' contents are hashed; on a change the credentials are
rebuilt from the settings and swapped in, so calls checked from then on use them (calls already
running finish). A replacement that does not parse is refused: a log line names the file and the
setting, and the old credentials stay in force. Each reload is counted by kind and result
(attnserve_credentials_reloads_total), and logged with a short fingerprint of the content in force
(a SHA-256 prefix: it names a version, never a token).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from serving.security import AuthSettings, TokenTable

log = logging.getLogger(__name__)


def fingerprint(path: Path) -> str | None:
    """A SHA-256 prefix of the file's content; None when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


class CredentialsWatch:
    """Polls the tokens file (`auth.tokens_file`) and reloads `tokens` in place when it changes."""

    def __init__(
        self, auth: AuthSettings, tokens: TokenTable, registry: CollectorRegistry, interval: float = 1.0
    ) -> None:
        assert auth.tokens_file is not None
        self.auth = auth
        self.path = auth.tokens_file
        self.tokens = tokens
        self.interval = interval
        self.reloads = Counter(
            "attnserve_credentials_reloads",
            "Reloads of rotated credentials by kind (tokens) and result (ok, refused: the old ones stay).",
            ("kind", "result"), registry=registry,
        )  # fmt: skip
        self.version = Gauge(
            "attnserve_credentials_loaded_timestamp_seconds",
            "When the credentials in force (by kind) were loaded, Unix time.",
            ("kind",), registry=registry,
        )  # fmt: skip
        self.version.labels("tokens").set_to_current_time()
        self.active = fingerprint(self.path)  # the content in force
        self._seen = self.active  # the last content looked at (a refused one is not retried until it changes)

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.check()

    def check(self) -> None:
        current = fingerprint(self.path)
        if current is None or current == self._seen:
            return  # unreadable mid-rotation (a rename): look again next time
        self._seen = current
        self._reload(current, lambda: TokenTable.from_settings(self.auth))

    def _reload(self, current: str, build: Callable[[], TokenTable | None]) -> None:
        try:
            table = build()
            if table is None:
                raise ValueError("no token left")
        except ValueError as exc:  # errors name the file and line, never a token
            self.reloads.labels("tokens", "refused").inc()
            log.error(
                "auth.tokens_file %s changed (content %s) but is refused: %s; the tokens of content %s stay in force",
                self.path, current, exc, self.active,
            )  # fmt: skip
            return
        self.tokens.replace(table)
        self.active = current
        self.reloads.labels("tokens", "ok").inc()
        self.version.labels("tokens").set_to_current_time()
        log.info("auth.tokens_file %s reloaded: %d token(s), content %s in force", self.path, len(table), current)
