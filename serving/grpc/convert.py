"""Open Inference Protocol tensors <-> numpy: pure functions, no server state.

Inputs are accepted raw (`raw_input_contents`, row-major, BYTES with 4-byte little-endian
length prefixes) or typed (`contents`); outputs always go raw, as tritonclient expects.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.errors import InvalidInput
from serving.grpc._gen.inference import grpc_service_pb2 as pb

# OIP datatype -> (numpy dtype, typed contents field)
DATATYPES: dict[str, tuple[Any, str]] = {
    "BOOL": (np.bool_, "bool_contents"),
    "INT8": (np.int8, "int_contents"),
    "INT16": (np.int16, "int_contents"),
    "INT32": (np.int32, "int_contents"),
    "INT64": (np.int64, "int64_contents"),
    "UINT8": (np.uint8, "uint_contents"),
    "UINT16": (np.uint16, "uint_contents"),
    "UINT32": (np.uint32, "uint_contents"),
    "UINT64": (np.uint64, "uint64_contents"),
    "FP16": (np.float16, ""),
    "FP32": (np.float32, "fp32_contents"),
    "FP64": (np.float64, "fp64_contents"),
    "BYTES": (np.object_, "bytes_contents"),
}
LITTLE_ENDIAN = sys.byteorder == "little"
NUMPY_TO_DATATYPE = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL"}


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """Request parameters as plain Python values."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        kind = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, kind) if kind else None
    return out


def _deserialize_bytes(raw: bytes, count: int, name: str) -> np.ndarray:
    items, offset = [], 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise InvalidInput(f"input '{name}': raw BYTES data ends before element {i} of {count}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidInput(f"input '{name}': element {i} claims {length} bytes, only {len(raw) - offset} remain")
        items.append(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise InvalidInput(f"input '{name}': {len(raw) - offset} unexpected bytes after {count} elements")
    return np.array(items, dtype=np.object_)


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> 4-byte little-endian length + data per element, row-major."""
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def request_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """The request's input tensors; INVALID_ARGUMENT on malformed data or duplicates."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents; send one per input")
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in arrays:
            raise InvalidInput(f"input '{name}' appears twice")
        if tensor.datatype not in DATATYPES:
            raise InvalidInput(f"input '{name}': unknown datatype '{tensor.datatype}'; use one of {sorted(DATATYPES)}")
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidInput(f"input '{name}': shape {list(shape)} has a negative dimension")
        count = math.prod(shape)
        dtype, field = DATATYPES[tensor.datatype]
        if raw:
            data = raw[i]
            if tensor.datatype == "BYTES":
                array = _deserialize_bytes(data, count, name)
            else:
                expected = count * np.dtype(dtype).itemsize
                if len(data) != expected:
                    raise InvalidInput(
                        f"input '{name}': {tensor.datatype} {list(shape)} needs {expected} bytes, got {len(data)}"
                    )
                array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
        else:
            if not field:
                raise InvalidInput(f"input '{name}': {tensor.datatype} can only be sent in raw_input_contents")
            values = list(getattr(tensor.contents, field))
            if len(values) != count:
                raise InvalidInput(f"input '{name}': shape {list(shape)} needs {count} values, got {len(values)}")
            array = np.array(values, dtype=dtype)
        arrays[name] = array.reshape(shape)
    return arrays


def response_outputs(response: pb.ModelInferResponse, outputs: Mapping[str, np.ndarray]) -> None:
    """Append outputs to `response` in raw form, in the given order."""
    for name, array in outputs.items():
        if array.dtype == np.object_:
            datatype, data = "BYTES", serialize_bytes(array)
        else:
            datatype = NUMPY_TO_DATATYPE.get(array.dtype)
            if datatype is None:
                raise TypeError(f"output '{name}' has unsupported dtype {array.dtype}")
            if not LITTLE_ENDIAN or array.dtype.byteorder == ">":
                array = array.astype(array.dtype.newbyteorder("<"))
            data = array.tobytes()  # row-major (C order), whatever the array's strides
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(data)
