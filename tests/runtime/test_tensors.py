"""runtime/tensors.py: the BYTES codec, TensorSpec and its datatypes, signature_mismatches."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from runtime.errors import InvalidInput
from runtime.tensors import (
    DATATYPES,
    DTYPE_OF_DATATYPE,
    Signature,
    TensorSpec,
    datatype_of,
    deserialize_bytes,
    dtype_name,
    numpy_dtype,
    serialize_bytes,
    signature_mismatches,
)

T = TensorSpec.of


def length(n: int) -> bytes:
    return struct.pack("<I", n)


def test_bytes_codec_layout():
    items = np.array([b"ab", b"", "é".encode()], dtype=np.object_)
    raw = serialize_bytes(items)
    assert raw == length(2) + b"ab" + length(0) + length(2) + "é".encode()
    back = deserialize_bytes(raw, 3, "text")
    assert back.dtype == np.object_ and back.shape == (3,) and back.tolist() == [b"ab", b"", b"\xc3\xa9"]


def test_bytes_codec_encodes_str_items_and_flattens_row_major():
    items = np.array([["a", b"b"], [bytearray(b"c"), "d"]], dtype=np.object_)  # [2, 2]
    assert deserialize_bytes(serialize_bytes(items), 4, "x").tolist() == [b"a", b"b", b"c", b"d"]


def test_bytes_codec_of_nothing():
    assert serialize_bytes(np.array([], dtype=np.object_)) == b""
    assert deserialize_bytes(b"", 0, "x").shape == (0,)


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_bytes_codec_round_trip(items: list[bytes]):
    array = np.empty(len(items), dtype=np.object_)
    array[:] = items
    assert deserialize_bytes(serialize_bytes(array), len(items), "x").tolist() == items


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"", 1, "input 'text': raw BYTES data ends before element 0 of 1"),
        (length(1) + b"a" + b"\x01\x00", 2, "input 'text': raw BYTES data ends before element 1 of 2"),
        (length(5) + b"abc", 1, "input 'text': element 0 claims 5 bytes, only 3 remain"),
        (length(1) + b"a" + length(2**32 - 1), 2, "input 'text': element 1 claims 4294967295 bytes, only 0 remain"),
        (length(1) + b"ab", 1, "input 'text': 1 unexpected bytes after 1 elements"),
        (length(0), 0, "input 'text': 4 unexpected bytes after 0 elements"),
    ],
)
def test_malformed_bytes_are_refused_naming_tensor_and_element(raw: bytes, count: int, message: str):
    with pytest.raises(InvalidInput) as err:
        deserialize_bytes(raw, count, "text")
    assert err.value.message == message


def test_tensor_spec():
    spec = T("attention", "float32", "batch", "steps", 26)
    assert spec.datatype == "FP32"
    assert spec.shape == (-1, -1, 26)
    assert spec.rank == 3
    assert spec.dynamic_axes() == {0: "batch", 1: "steps"}
    assert spec.concrete({"batch": 2, "steps": 5}) == (2, 5, 26)
    assert T("text", "bytes", "batch").datatype == "BYTES"
    assert TensorSpec.model_validate(spec.model_dump(mode="json")) == spec  # as config.yaml stores it


def test_tensor_spec_refuses_unknown_dtypes_and_fields():
    with pytest.raises(ValidationError):
        T("x", "complex64", "batch")
    with pytest.raises(ValidationError):
        TensorSpec.model_validate({"name": "x", "dtype": "int64", "axes": ["batch"], "shape": [-1]})
    with pytest.raises(ValidationError):
        T("x", "int64", "batch").name = "y"  # frozen


def test_datatype_table():
    assert len(DATATYPES) == 13 and DTYPE_OF_DATATYPE["FP16"] == "float16" and DTYPE_OF_DATATYPE["BYTES"] == "bytes"
    for name, datatype in DATATYPES.items():
        dtype = numpy_dtype(name)
        assert dtype_name(dtype) == name and datatype_of(dtype) == datatype
    assert numpy_dtype("bytes") == np.dtype(object)
    with pytest.raises(ValueError, match="numpy dtype complex64 has no Open Inference Protocol datatype"):
        datatype_of(np.dtype(np.complex64))
    with pytest.raises(ValueError, match="has no Open Inference Protocol datatype"):
        datatype_of(np.dtype("<U3"))


DECLARED = Signature(
    inputs=(T("ids", "int64", "batch", "len"), T("mask", "bool", "batch", "len")),
    outputs=(T("logits", "float32", "batch", 30), T("attention", "float32", "batch", "len")),
)


def test_an_identical_signature_has_no_mismatch():
    assert signature_mismatches(DECLARED, DECLARED) == []
    renamed_axes = Signature(
        inputs=(T("ids", "int64", "b", "s"), T("mask", "bool", "b", "s")),
        outputs=(T("logits", "float32", "b", 30), T("attention", "float32", "b", "s"), T("extra", "float32", "b")),
    )
    assert signature_mismatches(DECLARED, renamed_axes) == []  # axis names and extra outputs do not matter


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        (
            Signature(inputs=DECLARED.inputs[:1], outputs=DECLARED.outputs),
            "input 'mask' is declared but the graph has none (it has ['ids'])",
        ),
        (
            Signature(inputs=DECLARED.inputs, outputs=DECLARED.outputs[:1]),
            "output 'attention' is declared but the graph has none (it has ['logits'])",
        ),
        (
            Signature(inputs=(T("ids", "int32", "batch", "len"), DECLARED.inputs[1]), outputs=DECLARED.outputs),
            "input 'ids' is int32 in the graph, declared int64",
        ),
        (
            Signature(inputs=DECLARED.inputs, outputs=(T("logits", "float32", "batch"), DECLARED.outputs[1])),
            "output 'logits' has rank 1 in the graph, declared 2",
        ),
        (
            Signature(inputs=DECLARED.inputs, outputs=(T("logits", "float32", "batch", 31), DECLARED.outputs[1])),
            "output 'logits' axis 1 is 31 in the graph, declared 30",
        ),
        (
            Signature(inputs=(T("ids", "int64", 1, "len"), DECLARED.inputs[1]), outputs=DECLARED.outputs),
            "input 'ids' axis 0 (batch) is frozen at 1 in the graph",
        ),
        (
            Signature(inputs=(*DECLARED.inputs, T("state", "float32", "batch", 8)), outputs=DECLARED.outputs),
            "the graph takes input(s) ['state'] that config.yaml does not declare",
        ),
    ],
)
def test_each_mismatch_is_named(actual: Signature, problem: str):
    assert signature_mismatches(DECLARED, actual) == [problem]


def test_a_symbolic_axis_in_the_graph_where_config_fixes_a_size_is_accepted():
    actual = Signature(inputs=DECLARED.inputs, outputs=(T("logits", "float32", "batch", "vocab"), DECLARED.outputs[1]))
    assert signature_mismatches(DECLARED, actual) == []


def test_every_mismatch_is_reported_at_once():
    actual = Signature(inputs=(T("ids", "float32", "batch", "len"),), outputs=())
    assert len(signature_mismatches(DECLARED, actual)) == 4  # ids dtype, mask, logits, attention
