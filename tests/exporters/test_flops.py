"""FLOPs counted from the exported graphs: node counts on a small graph, and per-request FLOPs of the
reference seq2seq (additive) and Transformer against analytic counts from their configurations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from exporters.flops import component_flops, count
from runtime.flops import FlopsFile
from runtime.tensors import TensorSpec
from tests.helpers.paths import ROOT


def _small_graph(path: Path) -> Path:
    """x [batch, n, 8] -> MatMul W [8, 16] -> Add b -> Softmax -> ReduceSum over n, then * 2 + positions."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 16], np.ones(128, np.float32))
    b = helper.make_tensor("b", TensorProto.FLOAT, [16], np.ones(16, np.float32))
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Softmax", ["hb"], ["p"], axis=-1),
        helper.make_node("ReduceSum", ["p", "axis"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "two"], ["y"]),
        helper.make_node("Shape", ["x"], ["shape"]),  # data movement: no FLOPs
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [w, b, two, axis],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model = onnx.shape_inference.infer_shapes(model)
    onnx.save(model, path)
    return path


def test_operators_are_counted_from_real_shapes_and_fitted_in_the_axes(tmp_path):
    path = _small_graph(tmp_path / "small.onnx")
    x = np.zeros((3, 5, 8), np.float32)
    counts = count(onnx.load(path), {"x": x})
    # 2 FLOPs per multiply-add; 1 per element of an add or product, 5 of a softmax, a reduction's inputs
    assert counts == {
        "MatMul": 2 * 15 * 16 * 8,
        "Add": 15 * 16,
        "Softmax": 5 * 15 * 16,
        "ReduceSum": 15 * 16,
        "Mul": 48,
    }
    fitted = component_flops(path, (TensorSpec.of("x", "float32", "batch", "n", 8),))
    # per row and position: 256 (MatMul) + 16 (Add) + 80 (Softmax) + 16 (ReduceSum); per row: 16 (Mul)
    assert fitted.total.text() == "16*batch + 368*batch*n"
    assert fitted.total.at({"batch": 3, "n": 5}) == sum(counts.values())
    assert fitted.by_op["Mul"].text() == "16*batch"


def test_control_flow_is_refused_not_silently_counted_as_zero(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("c_in", TensorProto.FLOAT, ["n"]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("c_out", TensorProto.FLOAT, ["n"]),
        ],
    )
    trip = helper.make_tensor("trip", TensorProto.INT64, [], [2])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)],
        "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [trip, cond],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    with pytest.raises(ValueError, match="control flow"):
        count(model, {"x": np.zeros(3, np.float32)})


# --- the reference models against analytic counts from their configurations -------------------------

SOURCES = {"short": 12, "dates": 27, "long": 60}  # source tokens
STEPS = 11  # a dates answer: 10 characters and EOS


def _config(name: str) -> dict:
    return json.loads((ROOT / "checkpoints" / name / "config.json").read_text())["model"]


def seq2seq_additive(c: dict, src_len: int, steps: int) -> int:
    """Matrix products (2 per multiply-add) and biases of models/seq2seq.py with additive attention."""
    E, H, A, V = c["emb_dim"], c["hidden"], c["attn_hidden"], c["tgt_vocab"]
    gru = 2 * 3 * H * E + 2 * 3 * H * H + 2 * 3 * H  # one direction, one position
    encoder = src_len * (2 * gru + 2 * (2 * H) * H) + 2 * (2 * H) * H  # BiGRU, key projection, bridge
    attention = 2 * H * A + src_len * (2 * H * A + 2 * A + 2 * H)  # W q; U k, v^T tanh(.), context
    cell = 2 * 3 * H * (E + H) + 2 * 3 * H * H + 2 * 3 * H  # GRUCell over [embedding; context]
    out = 2 * (H + H + E) * H + 2 * H * V
    return encoder + steps * (attention + cell + out)


def transformer(c: dict, src_len: int, steps: int) -> int:
    """Matrix products of models/transformer.py: encoder layers, cross K/V once, cached decoder steps."""
    d, f, V = c["d_model"], c["ff_dim"], c["tgt_vocab"]
    layer = 4 * 2 * d * d + 2 * 2 * d * f  # Q, K, V, O and the feed-forward, per position
    encoder = c["enc_layers"] * (src_len * layer + 2 * 2 * src_len * src_len * d)
    encoder += c["dec_layers"] * src_len * 2 * 2 * d * d  # cross-attention keys and values, once
    decoder = 0
    for t in range(steps):  # step t attends over t cached positions and itself, and the source
        per_layer = 4 * 2 * d * d + 2 * 2 * d * d + 2 * 2 * d * f + 2 * 2 * (t + 1) * d + 2 * 2 * src_len * d
        decoder += c["dec_layers"] * per_layer + 2 * d * V
    return encoder + decoder


def graph_request(flops: FlopsFile, src_len: int, steps: int) -> int:
    enc, dec = flops.components["encoder"].total, flops.components["decoder_step"].total
    per_step = (dec.per_row({"src_len": src_len, "past_len": t}) for t in range(steps))
    return enc.per_row({"src_len": src_len}) + sum(per_step)


@pytest.mark.parametrize(
    ("model", "analytic"), [("dates-additive", seq2seq_additive), ("dates-transformer", transformer)]
)
def test_graph_flops_per_request_agree_with_an_analytic_count_within_5_percent(reference_repository, model, analytic):
    flops = FlopsFile.read(reference_repository / model / "1")
    assert flops is not None and flops.per_request is not None
    config = _config(model)
    for src_len in SOURCES.values():
        graph, expected = graph_request(flops, src_len, STEPS), analytic(config, src_len, STEPS)
        assert graph == pytest.approx(expected, rel=0.05), (model, src_len)
        assert graph >= expected  # the graph adds the element-wise work to the same products
    # parameters: the checkpoint's, as training reported them
    recorded = json.loads((ROOT / "checkpoints" / model / "metrics.json").read_text())
    assert flops.parameters == recorded["parameters"]
    assert flops.per_request.min <= flops.per_request.mean <= flops.per_request.max
