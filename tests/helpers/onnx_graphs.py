"""Small ONNX graphs made with onnx.helper for the tests of graphs served as they come (task
tensors): generators, not committed binaries. Also the onnx package's own backend test models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
WIDTH = 1024  # features of the dense graph: its matrix products make a call last long enough (ms) to batch


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def dense(path: Path, layers: int = 4, seed: int = 0) -> Path:
    """x FP32 [batch, WIDTH] -> y FP32 [batch, WIDTH] (tanh layers) and argmax INT64 [batch]:
    batchable by Triton's rule."""
    rng = np.random.default_rng(seed)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        w = rng.normal(0, WIDTH**-0.5, size=(WIDTH, WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [f"h{i}"]),
        ]
        last = f"h{i}"
    nodes += [
        helper.make_node("Identity", [last], ["y"]),
        helper.make_node("ArgMax", [last], ["argmax"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, ["batch"]),
        ],
        inits,
    )
    return _save(graph, path)


def masked_attention(path: Path, features: int = 8) -> Path:
    """Self-attention over the valid positions of each row, the padding masked out:
    x FP32 [batch, time, features], mask BOOL [batch, time] ->
    attention FP32 [batch, time, time] (softmax of x x^T, masked keys get exactly 0) and
    pooled FP32 [batch, features] (the mean of the valid positions of attention @ x)."""
    nodes = [
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),  # [B, T]
        helper.make_node("Unsqueeze", ["maskf", "axis1"], ["keys"]),  # [B, 1, T]
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["rows"]),  # [B, T, 1]
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),  # [B, F, T]
        helper.make_node("MatMul", ["x", "xt"], ["scores"]),  # [B, T, T]
        helper.make_node("Sub", ["one", "keys"], ["blocked"]),  # 1 where a key is padding
        helper.make_node("Mul", ["blocked", "minus_big"], ["bias"]),
        helper.make_node("Add", ["scores", "bias"], ["biased"]),
        helper.make_node("Softmax", ["biased"], ["attention"], axis=-1),  # [B, T, T]
        helper.make_node("MatMul", ["attention", "x"], ["context"]),  # [B, T, F]
        helper.make_node("Mul", ["context", "rows"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis1"], ["total"], keepdims=0),  # [B, F]
        helper.make_node("ReduceSum", ["rows", "axis1"], ["count"], keepdims=0),  # [B, 1]
        helper.make_node("Div", ["total", "count"], ["pooled"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(-1e9, dtype=np.float32), "minus_big"),
    ]
    graph = helper.make_graph(
        nodes,
        "masked_attention",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "time"]),
        ],
        [
            helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["batch", "time", "time"]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", features]),
        ],
        inits,
    )
    return _save(graph, path)


def every_datatype(path: Path) -> Path:
    """One Identity per protocol datatype ONNX Runtime takes, each [batch, 2] (BYTES as tensor(string))."""
    types = {
        "bool": TensorProto.BOOL, "int8": TensorProto.INT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
        "int64": TensorProto.INT64, "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16,
        "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64, "fp16": TensorProto.FLOAT16,
        "fp32": TensorProto.FLOAT, "fp64": TensorProto.DOUBLE, "bytes": TensorProto.STRING,
    }  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in types],
        "every_datatype",
        [helper.make_tensor_value_info(f"in_{n}", t, ["batch", 2]) for n, t in types.items()],
        [helper.make_tensor_value_info(f"out_{n}", t, ["batch", 2]) for n, t in types.items()],
    )
    return _save(graph, path)


def sequence_input(path: Path) -> Path:
    """A graph whose input is a sequence of tensors (no protocol datatype): xs seq(FP32) -> count INT64."""
    seq = helper.make_tensor_sequence_value_info("xs", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["xs"], ["count"])],
        "sequence_input",
        [seq],
        [helper.make_tensor_value_info("count", TensorProto.INT64, [])],
    )
    return _save(graph, path)


def backend_test_data() -> Path:
    """The onnx package's backend test models (each a folder: model.onnx, test_data_set_0/*.pb)."""
    return Path(onnx.__file__).parent / "backend" / "test" / "data"


def reference_case(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The inputs and expected outputs of a backend test model's first data set, in graph order."""
    data = folder / "test_data_set_0"

    def read(kind: str) -> list[np.ndarray]:
        arrays, i = [], 0
        while (data / f"{kind}_{i}.pb").is_file():
            tensor = TensorProto()
            tensor.ParseFromString((data / f"{kind}_{i}.pb").read_bytes())
            arrays.append(numpy_helper.to_array(tensor))
            i += 1
        return arrays

    return read("input"), read("output")
