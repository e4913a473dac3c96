"""KServe V2 REST inference bodies <-> numpy: JSON tensors and Triton's binary-data extension.

A request body is a JSON object, optionally followed by binary tensor data: then the
`Inference-Header-Content-Length` header gives the JSON part's length and each binary input
says its size in `parameters.binary_data_size` (inputs in order). An output is returned in
binary when it asks for it (`parameters.binary_data`) or the request does
(`parameters.binary_data_output`); the response then carries the same header. BYTES travel as
JSON strings (UTF-8) or, in binary, in the protocol's length-prefixed raw form. Pure functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from runtime.errors import InvalidInput, Unsupported, shown
from runtime.tensors import DTYPE_OF_DATATYPE, datatype_of, numpy_dtype, tensor_from_raw, tensor_to_raw

HEADER_LENGTH = "inference-header-content-length"
MAX_TENSORS = 64  # inputs, outputs and parameters per request: checked before the structure is validated
MAX_RANK = 32
# request-level parameters of the binary-data extension itself: never passed to the model
TRANSPORT_PARAMETERS = frozenset({"binary_data_output"})
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")

SCALARS = (bool, int, float, str)
Name = Annotated[StrictStr, Field(max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputTensor(_Strict):
    name: Name
    shape: list[Annotated[StrictInt, Field(ge=0)]] = Field(max_length=MAX_RANK)
    datatype: Annotated[StrictStr, Field(max_length=16)]
    parameters: dict[str, Any] = {}
    data: Any = None  # nested or flat JSON lists, row-major; absent for binary data


class OutputTensor(_Strict):
    name: Name
    parameters: dict[str, Any] = {}


class InferBody(_Strict):
    """The JSON part of an inference request (the Open Inference Protocol's REST form)."""

    id: Annotated[StrictStr, Field(max_length=256)] = ""
    parameters: dict[str, Any] = {}
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[OutputTensor] = []


@dataclass
class InferRequest:
    """A decoded request: what the data plane needs, and how to shape the response."""

    id: str
    inputs: dict[str, np.ndarray]
    params: dict[str, Any]  # for the model (the extension's own parameters removed)
    outputs: list[str]  # the names asked for (empty: every output)
    binary: dict[str, bool] = field(default_factory=dict)  # per output asked for: binary or JSON
    binary_default: bool = False  # for outputs not asked for by name

    def is_binary(self, output: str) -> bool:
        return self.binary.get(output, self.binary_default)


def parse_request(
    body: bytes,
    header_length: int | None,
    check: Callable[[list[tuple[str, str, tuple[int, ...]]]], None] | None = None,
    max_item_bytes: Mapping[str, int] | None = None,
) -> InferRequest:
    """A request body (JSON, then binary data when `header_length` is given); InvalidInput when
    malformed, Unsupported for extensions attnserve does not offer (shared memory, classification).

    `check([(name, datatype, shape), ...])` (the serving model's Pipeline.check_headers) runs on
    the inputs' headers before any tensor is decoded, and `max_item_bytes` bounds each binary
    BYTES element before it is copied: a hostile shape costs its header.
    """
    view = memoryview(body)
    split = len(view) if header_length is None else header_length
    request = _validate(bytes(body) if split == len(view) else bytes(view[:split]))
    if check is not None:
        check([(t.name, t.datatype, tuple(t.shape)) for t in request.inputs])
    binary = view[split:]
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for t in request.inputs:
        if t.name in inputs:
            raise InvalidInput(f"input '{shown(t.name)}' appears twice")
        _refuse_shared_memory(t.parameters, f"input '{shown(t.name)}'")
        size = t.parameters.get("binary_data_size")
        shape = tuple(t.shape)
        if size is None:
            if t.data is None:
                raise InvalidInput(f"input '{shown(t.name)}' has no data: send 'data' or binary data")
            inputs[t.name] = tensor_from_json(t.name, t.datatype, shape, t.data)
            continue
        if t.data is not None:
            raise InvalidInput(f"input '{shown(t.name)}' has both 'data' and binary_data_size: send one")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input '{shown(t.name)}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(
                f"input '{shown(t.name)}': binary_data_size {size} runs "
                f"past the body's {len(binary)} bytes of binary data"
                + ("" if header_length is not None else " (no Inference-Header-Content-Length header)")
            )
        limit = (max_item_bytes or {}).get(t.name)
        inputs[t.name] = tensor_from_raw(t.name, t.datatype, shape, binary[offset : offset + size], limit)
        offset += size
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data after the inputs claimed {offset}")
    requested, wants_binary = [], {}
    for o in request.outputs:
        _refuse_shared_memory(o.parameters, f"output '{shown(o.name)}'")
        if o.parameters.get("classification"):
            raise Unsupported(f"output '{shown(o.name)}': attnserve does not offer the classification extension")
        flag = o.parameters.get("binary_data", None)
        if flag is not None and not isinstance(flag, bool):
            raise InvalidInput(f"output '{shown(o.name)}': binary_data must be true or false")
        requested.append(o.name)
        if flag is not None:
            wants_binary[o.name] = flag
    default = request.parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InvalidInput("parameter 'binary_data_output' must be true or false")
    params = {k: v for k, v in request.parameters.items() if k not in TRANSPORT_PARAMETERS}
    return InferRequest(request.id, inputs, params, requested, wants_binary, default)


def _validate(json_part: bytes) -> InferBody:
    try:
        doc = pydantic_core.from_json(json_part)  # faster than json, and nesting is bounded
    except ValueError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object with 'inputs'")
    for key in ("inputs", "outputs", "parameters"):  # before pydantic validates every element
        value = doc.get(key)
        if isinstance(value, list | dict) and len(value) > MAX_TENSORS:
            raise InvalidInput(f"'{key}' has {len(value)} entries; at most {MAX_TENSORS}")
    try:
        body = InferBody.model_validate(doc)
    except ValidationError as exc:
        problems = [f"{shown('.'.join(str(p) for p in e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]]
        raise InvalidInput(f"malformed inference request: {'; '.join(problems)}") from None
    tensors = [(f"input '{shown(t.name)}' ", t.parameters) for t in body.inputs]
    tensors += [(f"output '{shown(t.name)}' ", t.parameters) for t in body.outputs]
    for where, params in [("", body.parameters), *tensors]:
        for key, value in params.items():
            if not isinstance(value, SCALARS):
                raise InvalidInput(f"{where}parameter '{shown(key)}' must be a boolean, a number or a string")
    return body


def _refuse_shared_memory(params: Mapping[str, Any], what: str) -> None:
    if any(k in params for k in SHARED_MEMORY):
        raise Unsupported(f"{what}: attnserve does not offer shared memory; send the data in the body")


def tensor_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """A tensor from JSON `data` (flat or nested lists, row-major); InvalidInput when the values
    do not fit the datatype (type or range) or their count does not fill the shape."""
    if datatype not in DTYPE_OF_DATATYPE:
        raise InvalidInput(
            f"input '{shown(name)}': unknown datatype {shown(repr(datatype))}; use one of {sorted(DTYPE_OF_DATATYPE)}"
        )
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _leaves(data)
        if len(items) != count:
            raise InvalidInput(
                f"input '{shown(name)}': shape {shown(list(shape))} needs {count} values, got {len(items)}"
            )
        array = np.empty(count, dtype=np.object_)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidInput(f"input '{shown(name)}': BYTES data are JSON strings; element {i} is {_kind(item)}")
            try:
                array[i] = item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput(f"input '{shown(name)}'[{i}] is not valid Unicode (a lone surrogate)") from None
        return array.reshape(shape)
    dtype = numpy_dtype(DTYPE_OF_DATATYPE[datatype])
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"input '{shown(name)}': data is not rectangular (nested lists of unequal lengths)"
        ) from None
    if values.size != count:
        raise InvalidInput(f"input '{shown(name)}': shape {shown(list(shape))} needs {count} values, got {values.size}")
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    if values.dtype.kind not in ACCEPTED[dtype.kind] or (
        dtype.kind in "iu" and (values.min() < np.iinfo(dtype).min or values.max() > np.iinfo(dtype).max)
    ):
        # numpy read the values as another kind: say which one does not fit; or, integers that it
        # read as floats (UINT64 values beyond INT64 mixed with others) fit after all
        leaves = _leaves(data)
        misfit = _misfit(datatype, dtype, leaves)
        if misfit:
            raise InvalidInput(f"input '{shown(name)}': {misfit}")
        return np.array(leaves, dtype=dtype).reshape(shape)
    with np.errstate(over="ignore"):  # a float beyond FP16/FP32 becomes inf, as a cast does
        return values.astype(dtype).reshape(shape)


# numpy kinds of the values (as np.asarray reads JSON) each kind of tensor takes
ACCEPTED = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


def _misfit(datatype: str, dtype: np.dtype, leaves: list[Any]) -> str:
    """What is wrong with the first value that does not fit `datatype`; "" when they all fit."""
    for i, value in enumerate(leaves):
        if dtype.kind == "b":
            if not isinstance(value, bool):
                return f"{datatype} data must be true or false; element {i} is {_kind(value)}"
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (dtype.kind in "iu" and not isinstance(value, int))
        ):
            wanted = "numbers" if dtype.kind == "f" else "integers"
            return f"{datatype} data must be {wanted}; element {i} is {_kind(value)}"
        elif dtype.kind in "iu" and not np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            info = np.iinfo(dtype)
            return f"element {i} is out of the range of {datatype} [{info.min}, {info.max}]"
    return ""


def _leaves(data: Any) -> list[Any]:
    """The values of nested lists, row-major (a lone value is one leaf)."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number with a fraction", str: "a string",
             dict: "an object", list: "a list"}  # fmt: skip
    return kinds.get(type(value), "null" if value is None else type(value).__name__)


def encode_response(
    request: InferRequest, model: str, version: str, backend: str, outputs: Mapping[str, np.ndarray]
) -> tuple[list[bytes], int | None]:
    """The response body as chunks (JSON, then binary outputs), and the JSON part's length when
    binary data follows it (for Inference-Header-Content-Length); None when it is JSON only."""
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in outputs.items():
        if request.is_binary(name):
            datatype, raw = tensor_to_raw(array)
            tensors.append(
                {"name": name, "datatype": datatype, "shape": list(array.shape),
                 "parameters": {"binary_data_size": len(raw)}}
            )  # fmt: skip
            chunks.append(raw)
        else:
            datatype, data = _json_data(name, array)
            tensors.append({"name": name, "datatype": datatype, "shape": list(array.shape), "data": data})
    header: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id:
        header["id"] = request.id
    header["parameters"] = {"backend": backend}
    header["outputs"] = tensors
    text = json.dumps(header, separators=(",", ":")).encode()  # NaN and Infinity as Triton writes them
    return [text, *chunks], (len(text) if chunks else None)


def _json_data(name: str, array: np.ndarray) -> tuple[str, list[Any]]:
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":
        try:
            return "BYTES", [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in flat]
        except UnicodeDecodeError:
            raise InvalidInput(f"output '{shown(name)}' holds bytes that are not UTF-8: ask for it in binary") from None
    return datatype_of(array.dtype.newbyteorder("=")), flat.tolist()
