"""Print HAProxy `tcp-check` rules that ask a gRPC server's grpc.health.v1 Check.

HAProxy 2.6's http-check cannot send a gRPC request (its body would start with NUL bytes), so the
check speaks HTTP/2 itself: the connection preface, an empty SETTINGS frame, a HEADERS frame for
POST /grpc.health.v1.Health/Check (HPACK literals, no Huffman) and a DATA frame holding the
length-prefixed HealthCheckRequest. The first expect waits for the HealthCheckResponse (the DATA
frame on stream 1), the second passes only if its status is SERVING, failing at once otherwise:

    python deploy/haproxy/grpc_health_check.py              # the whole server (service "")
    python deploy/haproxy/grpc_health_check.py dates-dot    # one model
"""

from __future__ import annotations

import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SERVING, NOT_SERVING = 1, 2


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(index: int, value: bytes) -> bytes:
    """HPACK literal with incremental indexing, name from the static table."""
    if len(value) > 126:
        raise ValueError("header value too long for this encoder")
    return bytes([0x40 | index, len(value)]) + value


def _message(payload: bytes) -> bytes:
    """gRPC length-prefixed message, uncompressed."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def request(service: str = "") -> bytes:
    """The bytes of one Check call for `service` on stream 1."""
    name = service.encode()
    if len(name) > 127:
        raise ValueError("service name too long")
    body = b"\x0a" + bytes([len(name)]) + name if name else b""  # HealthCheckRequest.service = 1
    headers = (
        b"\x83\x86"  # :method POST, :scheme http
        + _literal(4, b"/grpc.health.v1.Health/Check")  # :path
        + _literal(1, b"haproxy")  # :authority
        + _literal(31, b"application/grpc")  # content-type
        + b"\x00\x02te\x08trailers"  # te: trailers (new name)
    )
    return PREFACE + _frame(0x4, 0, 0, b"") + _frame(0x1, 0x4, 1, headers) + _frame(0x0, 0x1, 1, _message(body))


def response(status: int) -> bytes:
    """The DATA frame of a HealthCheckResponse with `status` (1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN)."""
    return _frame(0x0, 0, 1, _message(bytes([0x08, status])))


def rules(service: str = "") -> list[str]:
    answered = response(0).hex()[:-1] + "[0-3]"  # the response arrived, whatever its status
    return [
        "option tcp-check",
        "tcp-check connect",
        f"tcp-check send-binary {request(service).hex()}",
        f"tcp-check expect rbinary {answered}",
        f"tcp-check expect min-recv 1 binary {response(SERVING).hex()}",
    ]


if __name__ == "__main__":
    print("\n".join(rules(sys.argv[1] if len(sys.argv) > 1 else "")))
