"""Who may call what: bearer tokens with scopes, and TLS certificate files. Transport-neutral.

Tokens come from a file (`auth.tokens_file`, lines `<token> <scope>[,<scope>]`) and/or the
environment (`ATTNSERVE_AUTH__INFER_TOKEN`, `ATTNSERVE_AUTH__CONTROL_TOKEN`). A scope is
protected when at least one token grants it; the other scopes stay open. Tokens are kept only
as SHA-256 digests and compared in constant time; no token is ever logged or echoed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from runtime.errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

MIN_TOKEN_CHARS = 16
# RFC 6750 b64token: what may follow "Bearer " in an authorization header
TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class Scope(enum.Enum):
    INFER = "infer"  # inference, metadata, statistics, repository index, attention service, reflection
    CONTROL = "control"  # repository load / unload (and the admin RPCs attnserve does not offer)


class AuthSettings(BaseModel):
    """Bearer tokens; none configured (the default) leaves every method open."""

    model_config = ConfigDict(extra="forbid")

    tokens_file: Path | None = None  # lines "<token> <scope>[,<scope>]"; "#" starts a comment
    # the tokens file is checked this often and reloaded when its content changes (0: read once)
    reload_seconds: float = Field(1.0, ge=0)
    infer_token: SecretStr | None = None  # ATTNSERVE_AUTH__INFER_TOKEN
    control_token: SecretStr | None = None  # ATTNSERVE_AUTH__CONTROL_TOKEN


class TlsSettings(BaseModel):
    """Server certificate files (PEM). `cert` + `key` turn TLS on for gRPC (and the metrics endpoint)."""

    model_config = ConfigDict(extra="forbid")

    cert: Path | None = None  # certificate chain, the server's first
    key: Path | None = None  # its private key, unencrypted
    client_ca: Path | None = None  # CA bundle that signs client certificates (mutual TLS)
    require_client_auth: bool = False  # mutual TLS: refuse clients without a certificate signed by client_ca
    metrics: bool = True  # the metrics endpoint serves HTTPS with the same files when TLS is on

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together")
        if self.client_ca is not None and self.cert is None:
            raise ValueError("tls.client_ca needs tls.cert and tls.key (mutual TLS is TLS first)")
        if self.require_client_auth and self.client_ca is None:
            raise ValueError("tls.require_client_auth needs tls.client_ca to verify client certificates")
        if self.client_ca is not None and not self.require_client_auth:
            # gRPC asks for client certificates only when it requires them
            raise ValueError("tls.client_ca is used only with tls.require_client_auth: true (mutual TLS)")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert is not None


# --- tokens -------------------------------------------------------------------------------


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Token digests and their scopes; `authorize` raises Unauthenticated or PermissionDenied."""

    def __init__(self, grants: dict[str, set[Scope]]) -> None:
        for i, token in enumerate(grants, 1):
            _check_token(token, f"token {i}")
        entries = tuple((_digest(t), frozenset(s)) for t, s in grants.items())
        # (entries, protected scopes): one attribute, so a reload swaps both at once
        self._state: tuple[tuple[tuple[bytes, frozenset[Scope]], ...], frozenset[Scope]] = (
            entries,
            frozenset().union(*(s for _, s in entries)),
        )

    def __len__(self) -> int:
        return len(self._state[0])

    @property
    def protected(self) -> frozenset[Scope]:
        return self._state[1]

    def replace(self, other: TokenTable) -> None:
        """Take `other`'s tokens (a reloaded tokens file): calls checked from now on use them."""
        self._state = other._state

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenTable | None:
        """The configured tokens, or None when there are none (nothing is protected)."""
        grants: dict[str, set[Scope]] = {}
        if settings.tokens_file is not None:
            for token, scopes in read_tokens_file(settings.tokens_file):
                grants.setdefault(token, set()).update(scopes)
        for secret, scope, name in (
            (settings.infer_token, Scope.INFER, "auth.infer_token"),
            (settings.control_token, Scope.CONTROL, "auth.control_token"),
        ):
            if secret is not None:
                token = secret.get_secret_value()
                _check_token(token, name)
                grants.setdefault(token, set()).add(scope)
        return cls(grants) if grants else None

    def authorize(self, header: str | None, scope: Scope, method: str) -> None:
        """Check an `authorization` header value against `scope`; return when allowed."""
        entries, protected = self._state
        if scope not in protected:
            return
        if header is None:
            raise Unauthenticated(
                f"{method} needs a bearer token with the '{scope.value}' scope: "
                "send the metadata 'authorization: Bearer <token>'"
            )
        kind, _, token = header.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        presented = _digest(token.strip())
        granted: frozenset[Scope] | None = None
        for digest, scopes in entries:  # every entry, no early exit: the time says nothing
            if hmac.compare_digest(digest, presented):
                granted = scopes
        if granted is None:
            raise Unauthenticated("invalid bearer token")
        if scope not in granted:
            raise PermissionDenied(f"this token does not grant the '{scope.value}' scope that {method} needs")


def _check_token(token: str, where: str) -> None:
    if not TOKEN_RE.fullmatch(token):
        raise ValueError(f"{where}: a token may hold only letters, digits and -._~+/ (then '=' padding)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{where}: a token needs at least {MIN_TOKEN_CHARS} characters")


def read_tokens_file(path: Path) -> list[tuple[str, set[Scope]]]:
    """Parse `<token> <scope>[,<scope>]` lines. Errors name the line, never the token."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"auth.tokens_file: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("auth.tokens_file %s is readable by other users; chmod 600 it", path)
    known = {s.value: s for s in Scope}
    grants = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected '<token> <scope>[,<scope>]'")
        token, names = parts
        _check_token(token, f"{path}:{number}")
        scopes = set()
        for name in names.split(","):
            if name not in known:
                raise ValueError(f"{path}:{number}: unknown scope {name!r} (scopes: {', '.join(known)})")
            scopes.add(known[name])
        grants.append((token, scopes))
    if not grants:
        raise ValueError(f"auth.tokens_file {path} holds no token")
    return grants


# --- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of a checked TLS configuration (gRPC takes bytes, not paths)."""

    settings: TlsSettings
    cert_chain: bytes
    key: bytes
    client_ca: bytes | None

    @classmethod
    def load(cls, settings: TlsSettings) -> TlsFiles:
        """Read and check the files: a missing file, a key that does not match the certificate,
        an encrypted key or an unreadable CA bundle raises ValueError naming the setting."""
        assert settings.cert is not None and settings.key is not None
        files = cls(
            settings,
            _read(settings.cert, "tls.cert"),
            _read(settings.key, "tls.key"),
            _read(settings.client_ca, "tls.client_ca") if settings.client_ca else None,
        )
        files.ssl_context()  # OpenSSL's own checks, before anything binds
        return files

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context for HTTP endpoints: the same certificate, and client certificates
        required under mutual TLS, as for gRPC."""
        s = self.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(s.cert), str(s.key), password=_no_password)
        except (ssl.SSLError, _EncryptedKey) as exc:
            raise ValueError(f"tls.cert / tls.key ({s.cert}, {s.key}): {_reason(exc)}") from None
        if s.client_ca is not None:
            try:
                context.load_verify_locations(cafile=str(s.client_ca))
            except ssl.SSLError as exc:
                raise ValueError(f"tls.client_ca ({s.client_ca}): {_reason(exc)}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context


class _EncryptedKey(Exception):
    pass


def _no_password() -> bytes:
    raise _EncryptedKey("the key is encrypted; attnserve needs an unencrypted key file (keep it mode 600)")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    return str(exc)


def _read(path: Path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting}: {path} is not a PEM file")
    return data
