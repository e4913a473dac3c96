"""Count the FLOPs of an exported ONNX graph per operator, and fit them as polynomials in its axes.

The shapes come from running the graph in ONNX Runtime with every intermediate value exposed as
an output, at a few concrete sizes, so any graph that runs is counted without trusting symbolic
shape inference. The counts per operator type (runtime.flops states the convention) are fitted
as integer polynomials in the symbolic axes, and the fit is checked at sizes it did not use.

Why not onnx-tool (1.0.1, tried): its own shape inference fails on our dynamo-exported encoders
(ValueError in a Squeeze, seq2seq and Transformer alike), it counts MACs with its own per-op
constants, has no Loop or Scan, and its GRU leaves out the second direction's element-wise work; a
counter over real shapes is ~100 lines. Control flow (Loop, Scan, If) is refused here: the exporter
emits ONNX GRU ops, never loops.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from runtime.flops import ComponentFlops, fit, grid
from runtime.tensors import TensorSpec

Shapes = Mapping[str, tuple[int, ...]]
# 1 FLOP per output element: arithmetic, comparisons, activations, transcendentals
ELEMENTWISE = frozenset(
    {
        *("Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Sin", "Cos"),
        *("Tanh", "Sigmoid", "Relu", "Erf", "Max", "Min", "Mod", "Less", "LessOrEqual", "Greater"),
        *("GreaterOrEqual", "Equal", "And", "Or", "Not", "Xor", "Clip", "Floor", "Ceil", "Round", "Sign"),
        *("HardSigmoid", "LeakyRelu", "Elu", "Gelu", "Softplus"),
    }
)
PER_ELEMENT = {"Softmax": 5, "LogSoftmax": 5, "LayerNormalization": 8}  # max, sub, exp, sum, div / norm
REDUCE = frozenset(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin"])
CONTROL_FLOW = frozenset({"Loop", "Scan", "If"})
SAMPLE_SIZES = (1, 2, 3)  # degree 2 per axis needs 3 sizes; the fit is checked at CHECK_SIZES
CHECK_SIZES = (5, 7)


def _size(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _matmul(a: Sequence[int], b: Sequence[int], y: Sequence[int]) -> int:
    k = a[-1] if len(a) > 1 else a[0]
    return 2 * _size(y) * k


def _gemm(node: onnx.NodeProto, shapes: list[tuple[int, ...]], y: Sequence[int]) -> int:
    trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
    k = shapes[0][0] if trans_a else shapes[0][1]
    return 2 * _size(y) * k + (_size(y) if len(shapes) > 2 else 0)


def _gru(shapes: list[tuple[int, ...]]) -> int:
    # X [T, B, I], W [D, 3H, I], R [D, 3H, H]; per step, direction and row: input and recurrent
    # products, their biases, 2 sigmoid gates and the candidate's tanh over H, r*h, and the blend
    # h' = (1 - z) * n + z * h (3 per unit): 12 H besides the products
    steps, batch, inputs = shapes[0]
    dirs, three_h, _ = shapes[1]
    hidden = three_h // 3
    per_row = 2 * three_h * inputs + 2 * three_h * hidden + 2 * three_h + 12 * hidden
    return dirs * steps * batch * per_row


def node_flops(node: onnx.NodeProto, inputs: list[tuple[int, ...]], outputs: list[tuple[int, ...]]) -> int:
    """FLOPs of one node given its input and output shapes (runtime.flops: the convention)."""
    op = node.op_type
    if op in CONTROL_FLOW:
        raise ValueError(f"node {node.name!r}: {op} (control flow) is not counted; export without loops")
    if op == "MatMul":
        return _matmul(inputs[0], inputs[1], outputs[0])
    if op == "Gemm":
        return _gemm(node, inputs, outputs[0])
    if op == "GRU":
        return _gru(inputs)
    if op in PER_ELEMENT:
        return PER_ELEMENT[op] * _size(outputs[0])
    if op in REDUCE:
        return _size(inputs[0])
    if op in ELEMENTWISE:
        return _size(outputs[0])
    return 0


def graph_shapes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shape of every value of the (top-level) graph when it runs on `feeds`."""
    graph = model.graph
    known = {v.name for v in graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    for node in graph.node:
        for out in node.output:
            if out and out not in known and out in types:
                exposed.graph.output.append(onnx.helper.make_tensor_value_info(out, types[out], None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, dict(feeds))
    shapes = {n: tuple(np.shape(v)) for n, v in zip(names, values, strict=True)}
    shapes.update({k: tuple(v.shape) for k, v in feeds.items()})
    shapes.update({t.name: tuple(t.dims) for t in graph.initializer})
    for node in graph.node:  # Constant nodes' values
        if node.op_type == "Constant" and node.output[0] not in shapes:
            shapes[node.output[0]] = tuple(onnx.numpy_helper.to_array(node.attribute[0].t).shape)
    return shapes


def count(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """FLOPs per operator type of one run of `model` on `feeds`."""
    shapes = graph_shapes(model, feeds)
    by_op: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        ins = [shapes[i] if i else () for i in node.input]
        outs = [shapes.get(o, ()) for o in node.output]
        by_op[node.op_type] += node_flops(node, ins, outs)
    return {op: n for op, n in sorted(by_op.items()) if n}


def default_feeds(inputs: Sequence[TensorSpec], dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Feeds that any of our graphs accepts: ids and positions 1, masks all true, floats 0."""
    feeds = {}
    for t in inputs:
        shape = t.concrete(dims)
        if t.dtype == "bool":
            feeds[t.name] = np.ones(shape, dtype=bool)
        elif t.dtype.startswith("int"):
            feeds[t.name] = np.ones(shape, dtype=np.dtype(t.dtype))
        else:
            feeds[t.name] = np.zeros(shape, dtype=np.dtype(t.dtype))
    return feeds


Feeder = Callable[[Mapping[str, int]], Mapping[str, np.ndarray]]


def component_flops(path: Path, inputs: Sequence[TensorSpec], feeder: Feeder | None = None) -> ComponentFlops:
    """Fit the FLOPs of the graph at `path` as polynomials in its inputs' symbolic axes."""
    model = onnx.load(str(path))
    axes = tuple(dict.fromkeys(a for t in inputs for a in t.axes if isinstance(a, str)))
    feeder = feeder or (lambda dims: default_feeds(inputs, dims))
    points = grid(axes, dict.fromkeys(axes, SAMPLE_SIZES)) + grid(axes, dict.fromkeys(axes, CHECK_SIZES))
    counts = [(p, count(model, feeder(p))) for p in points]
    ops = sorted({op for _, c in counts for op in c})
    by_op = {op: fit(axes, [(p, c.get(op, 0)) for p, c in counts]) for op in ops}
    total = fit(axes, [(p, sum(c.values())) for p, c in counts])
    return ComponentFlops(total=total, by_op=by_op)
