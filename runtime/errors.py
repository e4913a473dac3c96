"""Transport-neutral errors. The gRPC layer maps `ErrorCode` to status codes in one table.

Messages are bounded: a client's own strings (tensor and parameter names, model names, datatypes,
values) are quoted through `shown`, cut to `SHOWN_CHARS`, and a whole message is cut to
`MESSAGE_BYTES` (gRPC sends it in a trailer, whose metadata gRPC limits to 8 KB by default: an
over-long message would turn the answer into RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import enum

SHOWN_CHARS = 80  # characters of one client-supplied string that an error message quotes
MESSAGE_BYTES = 1000  # UTF-8 bytes of an error message at most


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A client-supplied value as an error message quotes it: a string as is, anything else as its
    repr, cut to `limit` characters with the count of those left out."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def bounded(message: str, limit: int = MESSAGE_BYTES) -> str:
    """`message` cut to at most `limit` UTF-8 bytes (the last resort behind `shown`)."""
    data = message.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return message
    tail = " ... (message cut)"
    return data[: limit - len(tail)].decode("utf-8", "ignore") + tail


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    UNIMPLEMENTED = "unimplemented"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    FAILED_PRECONDITION = "failed_precondition"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"


class ServingError(Exception):
    """Base class: a message that says what to fix, and a code."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message


class InvalidInput(ServingError):
    code = ErrorCode.INVALID_ARGUMENT


class ModelNotFound(ServingError):
    code = ErrorCode.NOT_FOUND


class ModelUnavailable(ServingError):
    code = ErrorCode.UNAVAILABLE


class ModelLoadError(ServingError):
    """A model or backend failed to load (bad artifact, missing provider, CUDA fallback)."""

    code = ErrorCode.UNAVAILABLE


class InvalidModelConfig(ModelLoadError):
    """A config (config.yaml or a load override) that does not fit the model's graphs or files: a
    signature or decode-loop mismatch, a path leading outside the version folder, a file that is
    not regular or over its size limit. Refused at load, as the client's (or operator's) error."""

    code = ErrorCode.INVALID_ARGUMENT


class UnknownPlugin(InvalidInput, ValueError):
    """A name (attention, family, export spec, task, backend) that no installed package registers
    (runtime.registry); the message lists the known names."""


class PluginLoadError(ModelLoadError):
    """A registered plugin that cannot be used: its module fails to import, its name is registered
    twice, or it is not the kind of object its entry-point group holds (runtime.registry)."""


class Unsupported(ServingError):
    code = ErrorCode.UNIMPLEMENTED


class QueueFull(ServingError):
    """Admission refused: the model's queue holds `max_queue_size` requests already."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ServingError):
    """The request's deadline (gRPC deadline, `timeout` parameter or the model's default) passed
    before it could be computed; it was dropped unrun."""

    code = ErrorCode.DEADLINE_EXCEEDED


class Cancelled(ServingError):
    """The client cancelled the request (or went away) before it was answered."""

    code = ErrorCode.CANCELLED


class BackendFailure(ServingError):
    code = ErrorCode.INTERNAL


class ControlDisabled(ServingError):
    """Model control (load/unload) is off in this server's configuration; not worth retrying."""

    code = ErrorCode.FAILED_PRECONDITION


class Unauthenticated(ServingError):
    """No credentials, or credentials the server does not know."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDenied(ServingError):
    """Known credentials without the scope the method needs."""

    code = ErrorCode.PERMISSION_DENIED
