"""One tensor description, the Open Inference Protocol datatype table and the BYTES codec.

`TensorSpec` describes every tensor attnserve knows of: a graph input or output (in
`config.yaml`, in a backend's signature, in an export spec) and a request or response
tensor of a task. Its `dtype` is a numpy dtype name ("bytes" for BYTES, an object array of
`bytes`); its axes are ints (fixed sizes) or strings (symbolic axes such as "batch").
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from runtime.errors import InvalidInput, shown

DType = Literal[
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "bytes",
]  # fmt: skip
Axes = tuple[int | str, ...]

# numpy dtype name -> Open Inference Protocol datatype
DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bytes": "BYTES",
}
DTYPE_OF_DATATYPE: dict[str, str] = {v: k for k, v in DATATYPES.items()}
OBJECT = np.dtype(np.object_)


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of a dtype name ("bytes" is an object array)."""
    return OBJECT if dtype == "bytes" else np.dtype(dtype)


def dtype_name(dtype: np.dtype) -> str:
    """The dtype name of a numpy dtype ("bytes" for object arrays)."""
    return "bytes" if dtype == OBJECT else dtype.name


def datatype_of(dtype: np.dtype) -> str:
    """The Open Inference Protocol datatype of a numpy dtype; ValueError when it has none."""
    try:
        return DATATYPES[dtype_name(dtype)]
    except KeyError:
        raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype") from None


class TensorSpec(BaseModel):
    """A named tensor: dtype and axes (an int is a fixed size, a str a symbolic axis)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: DType
    axes: Axes

    @classmethod
    def of(cls, name: str, dtype: str, *axes: int | str) -> TensorSpec:
        """TensorSpec.of("attention", "float32", "batch", "src_len")."""
        return cls(name=name, dtype=dtype, axes=axes)

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol datatype (FP32, INT64, BYTES, ...)."""
        return DATATYPES[self.dtype]

    @property
    def shape(self) -> tuple[int, ...]:
        """Triton's shape: fixed sizes, -1 for a symbolic axis."""
        return tuple(a if isinstance(a, int) else -1 for a in self.axes)

    @property
    def rank(self) -> int:
        return len(self.axes)

    def dynamic_axes(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.axes) if isinstance(a, str)}

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with each symbolic axis replaced by its size in `dims`."""
        return tuple(dims[a] if isinstance(a, str) else a for a in self.axes)


class Signature(BaseModel):
    """A component's inputs and outputs, in call order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


# --- BYTES codec: 4-byte little-endian length, then the bytes, per element, row-major --------

LENGTH = struct.Struct("<I")


def serialize_bytes(array: np.ndarray) -> bytes:
    """A BYTES tensor in the protocol's raw form (str items are UTF-8 encoded)."""
    parts = []
    for item in array.reshape(-1):
        data = bytes(item) if isinstance(item, bytes | bytearray | memoryview) else str(item).encode("utf-8")
        parts.append(LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(raw: bytes | memoryview, count: int, name: str, max_item: int | None = None) -> np.ndarray:
    """`count` BYTES elements from the raw form -> object array [count] of bytes.

    Raises InvalidInput, naming the tensor and the element, on truncated or trailing data, and on
    an element longer than `max_item` bytes (refused before it is copied). Each element takes at
    least its 4-byte length, so a count the data cannot hold is refused before any element is
    decoded (the work is bounded by the data, not by a claimed shape).
    """
    items, offset, size = [], 0, len(raw)
    if count * LENGTH.size > size:
        raise InvalidInput(
            f"input '{shown(name)}': {count} BYTES elements need at least {count * LENGTH.size} bytes "
            f"(4 per element), got {size}"
        )
    for i in range(count):
        if offset + 4 > size:
            raise InvalidInput(f"input '{shown(name)}': raw BYTES data ends before element {i} of {count}")
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(f"input '{shown(name)}': element {i} claims {length} bytes, only {size - offset} remain")
        if max_item is not None and length > max_item:
            raise InvalidInput(
                f"input '{shown(name)}'[{i}] has {length} bytes; this model takes at most {max_item} per item"
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if offset != size:
        raise InvalidInput(f"input '{shown(name)}': {size - offset} unexpected bytes after {count} elements")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array


def signature_mismatches(declared: Signature, actual: Signature) -> list[str]:
    """How `actual` (what a backend loaded) differs from `declared` (what config.yaml says):
    missing or extra inputs, missing outputs, dtypes, ranks, fixed sizes, frozen symbolic axes."""
    problems: list[str] = []
    pairs = (("input", declared.inputs, actual.inputs), ("output", declared.outputs, actual.outputs))
    for kind, want_all, have_all in pairs:
        have = {t.name: t for t in have_all}
        for want in want_all:
            got = have.get(want.name)
            if got is None:
                problems.append(f"{kind} '{want.name}' is declared but the graph has none (it has {sorted(have)})")
                continue
            if got.dtype != want.dtype:
                problems.append(f"{kind} '{want.name}' is {got.dtype} in the graph, declared {want.dtype}")
            if got.rank != want.rank:
                problems.append(f"{kind} '{want.name}' has rank {got.rank} in the graph, declared {want.rank}")
                continue
            for axis, (w, g) in enumerate(zip(want.axes, got.axes, strict=True)):
                if isinstance(w, int) and isinstance(g, int) and w != g:
                    problems.append(f"{kind} '{want.name}' axis {axis} is {g} in the graph, declared {w}")
                elif isinstance(w, str) and isinstance(g, int):
                    problems.append(f"{kind} '{want.name}' axis {axis} ({w}) is frozen at {g} in the graph")
    extra = sorted({t.name for t in actual.inputs} - {t.name for t in declared.inputs})
    if extra:
        problems.append(f"the graph takes input(s) {extra} that config.yaml does not declare")
    return problems


# --- raw tensors: the protocol's binary form, shared by every transport -----------------------


def tensor_from_raw(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview, max_item: int | None = None
) -> np.ndarray:
    """A request tensor from its raw form (row-major, little-endian; BYTES length-prefixed).

    Raises InvalidInput, naming the tensor, on an unknown datatype, a negative dimension, data
    that does not fill the shape exactly, or a BYTES element over `max_item` bytes.
    """
    if datatype not in DTYPE_OF_DATATYPE:
        raise InvalidInput(
            f"input '{shown(name)}': unknown datatype {shown(repr(datatype))}; use one of {sorted(DTYPE_OF_DATATYPE)}"
        )
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{shown(name)}': shape {shown(list(shape))} has a negative dimension")
    count = math.prod(shape)
    if datatype == "BYTES":
        return deserialize_bytes(raw, count, name, max_item).reshape(shape)
    dtype = np.dtype(DTYPE_OF_DATATYPE[datatype]).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"input '{shown(name)}': {datatype} {shown(list(shape))} needs {expected} bytes, got {len(raw)}"
        )
    # a copy: aligned, native byte order, and independent of the request body it came in
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def tensor_to_raw(array: np.ndarray) -> tuple[str, bytes]:
    """(datatype, raw bytes) of a response tensor; str, bytes and object arrays travel as BYTES."""
    if array.dtype.kind in "OSU":
        return "BYTES", serialize_bytes(array)
    datatype = datatype_of(array.dtype.newbyteorder("="))
    return datatype, array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()  # row-major (C order)
