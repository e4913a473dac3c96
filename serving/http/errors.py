"""Errors to HTTP status codes, in one place for every endpoint (the gRPC table: serving.grpc.interceptors)."""

from __future__ import annotations

from runtime.errors import ErrorCode, ServingError, bounded

# Triton's HTTP codes where it has the error (400, 404, 503, 501, 500); the others as Google's API
# design guide maps the gRPC codes (429, 400 for a failed precondition, 401, 403, 504, 499)
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNIMPLEMENTED: 501,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.FAILED_PRECONDITION: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.CANCELLED: 499,
}


class HttpError(Exception):
    """A refusal of the HTTP layer itself (unknown route, method, body too large), not of a model."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        message = bounded(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def status_of(exc: ServingError) -> int:
    return HTTP_STATUS[exc.code]
