"""Open Inference Protocol tensors <-> numpy: pure functions, no server state.

Used by the server (requests in, responses out) and by `client` (the other way),
so both ends share one codec. Tensors travel raw (`raw_*_contents`, row-major, BYTES with
4-byte little-endian length prefixes: `runtime.tensors`) or typed (`contents`); the server
always answers raw, as tritonclient expects.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from protocol.gen.inference import grpc_service_pb2 as pb
from runtime.errors import InvalidInput, shown
from runtime.tensors import DTYPE_OF_DATATYPE, deserialize_bytes, numpy_dtype, tensor_to_raw

# OIP datatype -> typed `contents` field (FP16 travels raw only)
CONTENTS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
LITTLE_ENDIAN = sys.byteorder == "little"
# [(name, datatype, shape), ...] of a request's tensors -> None, or InvalidInput
HeaderCheck = Callable[[list[tuple[str, str, tuple[int, ...]]]], None]


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """Request parameters as plain Python values."""
    out: dict[str, Any] = {}
    for key, p in params.items():
        kind = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, kind) if kind else None
    return out


def set_parameter(param: pb.InferParameter, value: Any) -> None:
    """Store a bool, int, float or str in an InferParameter."""
    if isinstance(value, bool | np.bool_):
        param.bool_param = bool(value)
    elif isinstance(value, int | np.integer):
        param.int64_param = int(value)
    elif isinstance(value, float | np.floating):
        param.double_param = float(value)
    elif isinstance(value, str):
        param.string_param = value
    else:
        raise TypeError(f"parameter value {shown(repr(value))} is not a bool, int, float or str")


def decode_tensor(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    raw: bytes | memoryview | None,
    contents: Any,
    max_item: int | None = None,
) -> np.ndarray:
    """One tensor from its raw bytes (when given) or its typed contents; InvalidInput when malformed
    (a BYTES element over `max_item` bytes included)."""
    if datatype not in DTYPE_OF_DATATYPE:
        raise InvalidInput(
            f"input '{shown(name)}': unknown datatype '{shown(datatype)}'; use one of {sorted(CONTENTS)}"
        )
    if any(d < 0 for d in shape):
        raise InvalidInput(f"input '{shown(name)}': shape {shown(list(shape))} has a negative dimension")
    count = math.prod(shape)
    dtype = numpy_dtype(DTYPE_OF_DATATYPE[datatype])
    if raw is not None:
        if datatype == "BYTES":
            array = deserialize_bytes(raw, count, name, max_item)
        else:
            expected = count * dtype.itemsize
            if len(raw) != expected:
                raise InvalidInput(
                    f"input '{shown(name)}': {datatype} {shown(list(shape))} needs {expected} bytes, got {len(raw)}"
                )
            array = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
            if not LITTLE_ENDIAN:
                array = array.astype(dtype)
    else:
        field = CONTENTS.get(datatype)
        if field is None:
            raise InvalidInput(f"input '{shown(name)}': {datatype} can only be sent in raw contents")
        repeated = getattr(contents, field)
        if len(repeated) != count:  # before any value becomes a Python object
            raise InvalidInput(
                f"input '{shown(name)}': shape {shown(list(shape))} needs {count} values, got {len(repeated)}"
            )
        values = list(repeated)
        if datatype == "BYTES":
            for i, value in enumerate(values):
                if max_item is not None and len(value) > max_item:
                    raise InvalidInput(
                        f"input '{shown(name)}'[{i}] has {len(value)} bytes; "
                        f"this model takes at most {max_item} per item"
                    )
            array = np.empty(count, dtype=np.object_)
            array[:] = values
        else:
            array = np.array(values, dtype=dtype)
    return array.reshape(shape)


def request_inputs(
    request: pb.ModelInferRequest,
    check: HeaderCheck | None = None,
    max_item_bytes: Mapping[str, int] | None = None,
    raw: Sequence[bytes | memoryview] | None = None,
) -> dict[str, np.ndarray]:
    """The request's input tensors; INVALID_ARGUMENT on malformed data or duplicates.

    `check([(name, datatype, shape), ...])` (the serving model's, Pipeline.check_headers) runs on
    the tensors' headers before any tensor's data is read: a shape the model refuses costs nothing.
    `max_item_bytes` bounds a BYTES input's elements (Pipeline.max_item_bytes), checked before
    each is copied. `raw` stands for the request's raw_input_contents when given (views of a
    large body, serving.grpc.infer_body).
    """
    raw_contents = request.raw_input_contents if raw is None else raw
    count = len(raw_contents)
    if count and count != len(request.inputs):
        raise InvalidInput(f"{len(request.inputs)} inputs but {count} raw_input_contents; send one per input")
    headers = [(t.name, t.datatype, tuple(t.shape)) for t in request.inputs]
    seen: set[str] = set()
    for name, _, _ in headers:
        if name in seen:
            raise InvalidInput(f"input '{shown(name)}' appears twice")
        seen.add(name)
    if check is not None:
        check(headers)
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        data = raw_contents[i] if count else None
        limit = (max_item_bytes or {}).get(tensor.name)
        arrays[tensor.name] = decode_tensor(tensor.name, tensor.datatype, headers[i][2], data, tensor.contents, limit)
    return arrays


def response_outputs(response: pb.ModelInferResponse, outputs: Mapping[str, np.ndarray]) -> None:
    """Append outputs to `response` in raw form, in the given order."""
    for name, array in outputs.items():
        datatype, data = tensor_to_raw(array)
        response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        response.raw_output_contents.append(data)


def infer_request(
    model: str,
    inputs: Mapping[str, Any],
    outputs: Any = None,
    params: Mapping[str, Any] | None = None,
    version: str = "",
) -> pb.ModelInferRequest:
    """A ModelInferRequest with raw inputs (the client side)."""
    request = pb.ModelInferRequest(model_name=model, model_version=str(version))
    for name, value in inputs.items():
        array = np.asarray(value)
        datatype, data = tensor_to_raw(array)
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(data)
    for name in outputs or ():
        request.outputs.add(name=name)
    for key, value in (params or {}).items():
        set_parameter(request.parameters[key], value)
    return request


def response_tensors(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """The output tensors of a ModelInferResponse, raw or typed (the client side)."""
    raw = list(response.raw_output_contents)
    return {
        t.name: decode_tensor(t.name, t.datatype, tuple(int(d) for d in t.shape), raw[i] if raw else None, t.contents)
        for i, t in enumerate(response.outputs)
    }
