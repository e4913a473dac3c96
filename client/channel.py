"""The client's channel settings: several addresses, round-robin, health checks, retries, headers.

`configure(address, ...)` turns Client options into a gRPC target and channel options (the
service config). Nothing here opens a connection; a host name in an address list is resolved once.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

# Target schemes gRPC resolves itself; anything else is "host:port" or a comma-separated list.
SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")

# Idempotent calls only: inference and metadata. Never the probes (a retry would answer for
# another replica), model load/unload, the stream, or settings.
RETRIED_METHODS: tuple[tuple[str, str], ...] = (
    *(("inference.GRPCInferenceService", m) for m in
      ("ModelInfer", "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelStatistics", "RepositoryIndex")),
    *(("attnserve.v1.Attention", m) for m in ("Translate", "Classify", "Sort")),
)  # fmt: skip
GRPC_MAX_ATTEMPTS = 5  # gRPC caps retryPolicy.maxAttempts at 5


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retryPolicy for the inference and metadata calls (`RETRIED_METHODS`).

    A call answered with one of `codes` before any response arrived is sent again, through the
    load-balancing policy (so to the next replica in a round-robin), after a random backoff of up
    to `initial_backoff` seconds, multiplied by `backoff_multiplier` each time up to `max_backoff`;
    `max_attempts` counts the first one. All attempts share the call's timeout.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 1.0
    backoff_multiplier: float = 2.0
    codes: tuple[str, ...] = field(default=("UNAVAILABLE",))

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= GRPC_MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be 2..{GRPC_MAX_ATTEMPTS} (gRPC's cap), got {self.max_attempts}")
        if not 0 < self.initial_backoff <= self.max_backoff:
            raise ValueError("backoffs must satisfy 0 < initial_backoff <= max_backoff")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be > 0")
        names = {c.name for c in grpc.StatusCode} - {"OK"}
        unknown = [c for c in self.codes if c not in names]
        if not self.codes or unknown:
            raise ValueError(f"codes must be gRPC status names other than OK, got {list(self.codes)}")

    def method_config(self) -> dict[str, Any]:
        """The service config's methodConfig entry."""
        return {
            "name": [{"service": s, "method": m} for s, m in RETRIED_METHODS],
            "retryPolicy": {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff}s",
                "maxBackoff": f"{self.max_backoff}s",
                "backoffMultiplier": self.backoff_multiplier,
                "retryableStatusCodes": list(self.codes),
            },
        }


@dataclass(frozen=True)
class Target:
    """What the channel connects to: a gRPC target string, and how many addresses were listed."""

    target: str
    listed: int  # addresses given in a comma-separated list; 1 for a single address or a scheme
    authority: str | None = None  # for a list: its first entry, as given (the name TLS verifies)


def target(address: str) -> Target:
    """`host:port`, a scheme gRPC resolves (`dns:///name:port`, `ipv4:a:p,b:q`, `unix:path`), or a
    comma-separated list of `host:port` (IPv6 in brackets), turned into an `ipv4:`/`ipv6:` target.

    Host names in a list are resolved here, once; use `dns:///name:port` for a name whose addresses
    change. Every entry of a list must have an address of one family (IPv4 preferred). The first
    entry is the channel's authority: over TLS, every replica's certificate must be valid for its host.
    """
    address = address.strip()
    if not address:
        raise ValueError("empty address")
    if address.startswith(SCHEMES) or "," not in address:
        return Target(address, 1)
    entries = [e.strip() for e in address.split(",")]
    if not all(entries):
        raise ValueError(f"empty entry in address list {address!r}")
    resolved = [_resolve(e) for e in entries]
    for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
        if all(family in r for r in resolved):
            picked = dict.fromkeys(a for r in resolved for a in r[family])  # ordered, without repeats
            return Target(f"{scheme}:" + ",".join(picked), len(entries), entries[0])
    raise ValueError(f"the addresses of {address!r} are not all IPv4 or all IPv6")


def _resolve(entry: str) -> dict[int, list[str]]:
    """`host:port` -> {family: ["ip:port" or "[ip6]:port", ...]}."""
    host, sep, port = entry.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address {entry!r} needs host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ips = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from None
        ips = [ipaddress.ip_address(info[4][0]) for info in infos]
    out: dict[int, list[str]] = {}
    for ip in ips:
        if ip.version == 4:
            out.setdefault(socket.AF_INET, []).append(f"{ip}:{port}")
        else:
            out.setdefault(socket.AF_INET6, []).append(f"[{ip}]:{port}")
    return out


def service_config(retry: RetryPolicy | None, health_check: bool) -> dict[str, Any]:
    """Round-robin over every address of the target; health checks drop a replica from the
    rotation while grpc.health.v1 says it is not SERVING (e.g. draining); retries as `retry`."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if health_check:
        config["healthCheckConfig"] = {"serviceName": ""}
    if retry is not None:
        config["methodConfig"] = [retry.method_config()]
    return config


def configure(address: str, retry: RetryPolicy | None, health_check: bool | None) -> tuple[str, list[tuple[str, str]]]:
    """The target and channel options for `address`. `health_check` None: on for a list of
    several addresses (each connection is one replica), off otherwise (behind an L7 load balancer
    the health stream reaches one replica, not the one a call goes to)."""
    where = target(address)
    checks = where.listed > 1 if health_check is None else health_check
    options = [("grpc.service_config", json.dumps(service_config(retry, checks)))]
    if where.authority is not None:
        options.append(("grpc.default_authority", where.authority))
    return where.target, options


def call_metadata(metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Headers sent with every call: keys lowercased (HTTP/2), reserved ones refused."""
    pairs = []
    for key, value in (metadata or {}).items():
        name = key.strip().lower()
        if not name or name.startswith((":", "grpc-")) or name.endswith("-bin"):
            raise ValueError(f"metadata key {key!r} is reserved or binary (use a plain ASCII header name)")
        if not isinstance(value, str):
            raise ValueError(f"metadata {key!r} must be a str, got {type(value).__name__}")
        pairs.append((name, value))
    return tuple(pairs)
