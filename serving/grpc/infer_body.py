"""ModelInferRequest bodies parsed without copying their raw tensors.

protobuf copies every `raw_input_contents` item when it parses a body, on the event loop and
under the GIL (a 50 MB body: one more 50 MB copy and ~0.1 s before any check can run). A large
body is instead split at its top level: the small fields (names, shapes, parameters) are
parsed by protobuf as usual, and each raw tensor stays a view of the received body, copied
only when the model has accepted its header. The result equals protobuf's parse of the same
bytes; anything unusual (many top-level fields, groups) is left to protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from google.protobuf.message import DecodeError

from protocol.gen.inference import grpc_service_pb2 as pb

RAW_FIELD = pb.ModelInferRequest.RAW_INPUT_CONTENTS_FIELD_NUMBER
SPLIT_BYTES = 1 << 20  # smaller bodies are parsed by protobuf directly
MAX_FIELDS = 4096  # more top-level fields than this: protobuf parses (in C), not this loop


@dataclass
class SplitRequest:
    """A ModelInferRequest: `message` holds every field but raw_input_contents, which `raw` holds
    as views of the received body, in order."""

    message: pb.ModelInferRequest
    raw: list[memoryview]


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for _ in range(10):
        if pos >= len(view):
            raise DecodeError("truncated varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise DecodeError("varint longer than 10 bytes")


def parse_infer_request(body: bytes, split_bytes: int = SPLIT_BYTES) -> pb.ModelInferRequest | SplitRequest:
    """The request in `body`: a SplitRequest when it has `split_bytes` or more, else protobuf's
    parse. Raises DecodeError on a body protobuf would refuse."""
    if len(body) < split_bytes:
        return cast(pb.ModelInferRequest, pb.ModelInferRequest.FromString(body))
    view = memoryview(body)
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    pos, size = 0, len(body)
    for _ in range(MAX_FIELDS):
        if pos >= size:
            break
        start = pos
        tag, pos = _varint(view, pos)
        wire = tag & 7
        if wire == 2:  # length-delimited
            length, pos = _varint(view, pos)
            end = pos + length
            if end > size:
                raise DecodeError("truncated length-delimited field")
            if tag >> 3 == RAW_FIELD:
                raw.append(view[pos:end])
            else:
                rest.append(view[start:end])
            pos = end
        elif wire == 0:
            _, pos = _varint(view, pos)
            rest.append(view[start:pos])
        elif wire in (1, 5):  # fixed 64 / 32 bits
            pos += 8 if wire == 1 else 4
            if pos > size:
                raise DecodeError("truncated fixed-size field")
            rest.append(view[start:pos])
        else:  # groups or invalid wire types: protobuf's own verdict
            return cast(pb.ModelInferRequest, pb.ModelInferRequest.FromString(body))
    else:
        if pos < size:
            return cast(pb.ModelInferRequest, pb.ModelInferRequest.FromString(body))
    return SplitRequest(pb.ModelInferRequest.FromString(b"".join(rest)), raw)
