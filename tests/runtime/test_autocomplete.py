"""Triton's auto-complete rule (runtime.autocomplete) and the tensors pipeline over numpy runners:
no ONNX Runtime, no repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.autocomplete import batch_blocker, complete, crop_axes, probe_batching
from runtime.config import ModelConfig
from runtime.errors import InvalidInput, InvalidModelConfig
from runtime.pipelines.tensors import TensorsPipeline
from runtime.tensors import Signature, TensorSpec

T = TensorSpec.of


def sig(inputs, outputs) -> Signature:
    return Signature(inputs=tuple(inputs), outputs=tuple(outputs))


ROWWISE = sig([T("x", "float32", "batch", 3)], [T("y", "float32", "batch", 3)])


def double(feeds):
    return {"y": feeds["x"] * 2}


def test_batch_blocker_names_the_tensor():
    assert batch_blocker(ROWWISE) is None
    assert batch_blocker(sig([T("x", "float32", "?", 3)], [T("y", "float32", "?")])) is None  # unnamed dynamic
    fixed = sig([T("x", "float32", 2, 3)], [T("y", "float32", "batch")])
    assert batch_blocker(fixed) == "input 'x' has shape [2, 3]: its first axis is fixed at 2"
    scalar = sig([T("x", "float32", "batch")], [T("n", "int64")])
    assert batch_blocker(scalar) == "output 'n' is a scalar (rank 0): it has no batch axis"


def test_the_probe_runs_batch_1_against_batch_3():
    assert probe_batching(ROWWISE, double).batchable is True
    # a dynamic first axis that is not the batch: the output's does not follow it
    summed = probe_batching(ROWWISE, lambda f: {"y": f["x"].sum(0, keepdims=True)})
    assert summed.batchable is False and "output 'y' has shape [1, 3] at batch 1 and [1, 3] at batch 3" in summed.reason
    # rows mixed: the shape follows, the values do not
    mixed = probe_batching(ROWWISE, lambda f: {"y": f["x"] - f["x"].mean(0)})
    assert mixed.batchable is False and "row 0 of a batch of 3 differs" in mixed.reason

    def refuses(feeds):
        raise InvalidInput("no")

    assert probe_batching(ROWWISE, refuses).batchable is None


def test_complete_by_triton_rule():
    done, notes = complete({}, "m", ROWWISE, double, default_max_batch_size=4)
    config = ModelConfig.model_validate(done)
    assert (config.task, config.max_batch_size, config.attention, notes) == ("tensors", 4, "external", [])
    assert config.dynamic_batching is not None and [b.name for b in config.backends] == ["onnxruntime"]
    assert config.components["model"].inputs == ROWWISE.inputs
    # a partial config keeps what it says
    done, _ = complete({"max_batch_size": 16, "dynamic_batching": None, "attention": "dot"}, "m", ROWWISE, double)
    config = ModelConfig.model_validate(done)
    assert (config.max_batch_size, config.dynamic_batching, config.attention) == (16, None, "dot")
    # a graph that cannot batch runs requests as sent
    fixed = sig([T("x", "float32", 2, 3)], [T("y", "float32", 2, 3)])
    done, _ = complete({}, "m", fixed, double)
    assert (done["max_batch_size"], done["dynamic_batching"]) == (0, None)
    ModelConfig.model_validate(done)


@pytest.mark.parametrize("asked", [{"max_batch_size": 8}, {"dynamic_batching": {}}])
def test_batching_asked_of_a_graph_that_cannot_batch_names_the_tensor(asked):
    fixed = sig([T("x", "float32", 2, 3)], [T("y", "float32", 2, 3)])
    with pytest.raises(InvalidModelConfig, match=r"cannot batch .*input 'x' has shape \[2, 3\]"):
        complete(asked, "m", fixed, double)
    with pytest.raises(InvalidModelConfig, match="output 'y' has shape"):
        complete(asked, "m", ROWWISE, lambda f: {"y": f["x"].sum(0, keepdims=True)})


def test_only_task_tensors_is_completed():
    with pytest.raises(InvalidModelConfig, match="must list its components"):
        complete({"task": "sort"}, "m", ROWWISE, double)


MASKED = sig(
    [T("x", "float32", "batch", "time", 2), T("mask", "bool", "batch", "time")],
    [T("attention", "float32", "batch", "time", "time"), T("pooled", "float32", "batch", 2)],
)


def masked(feeds):
    """attention: uniform over each row's valid positions; pooled: the mean of the valid x."""
    x, mask = feeds["x"], feeds["mask"].astype(np.float32)  # [B, T, 2], [B, T]
    weights = mask / np.maximum(mask.sum(1, keepdims=True), 1)  # [B, T]
    attention = np.repeat(weights[:, None, :], x.shape[1], axis=1)  # [B, T, T]
    return {"attention": attention, "pooled": (x * weights[:, :, None]).sum(1)}


PAD = {"x": {"axis": 1, "value": 0.0}, "mask": {"axis": 1, "value": False}}


def test_crop_axes_follow_the_padded_length():
    assert crop_axes(MASKED, PAD, masked, size=1) == {"attention": [1, 2]}
    done, _ = complete({"pad": PAD}, "m", MASKED, masked)
    assert done["crop"] == {"attention": [1, 2]}
    with pytest.raises(InvalidModelConfig, match="pad names input 'y'"):
        complete({"pad": {"y": {"axis": 1}}}, "m", MASKED, masked)
    with pytest.raises(InvalidModelConfig, match=r"pad axis 2 of input 'x'.*must be a dynamic axis"):
        complete({"pad": {"x": {"axis": 2}}}, "m", MASKED, masked)


def _pipeline(raw: dict, signature: Signature, run) -> TensorsPipeline:
    done, _ = complete(raw, "m", signature, run)
    return TensorsPipeline(ModelConfig.model_validate(done), Path("."))


def test_padded_requests_share_a_batch_and_answer_as_alone():
    pipeline = _pipeline({"pad": PAD}, MASKED, masked)
    rng = np.random.default_rng(0)
    requests = []
    for rows, length in ((1, 3), (2, 5), (1, 2)):
        x = rng.normal(size=(rows, length, 2)).astype(np.float32)
        requests.append(pipeline.prepare({"x": x, "mask": np.ones((rows, length), bool)}, {}))
    assert len({p.key for p in requests}) == 1  # one key: they may share a batch
    merged = pipeline.execute(requests, {"model": masked})
    for p, answer in zip(requests, merged, strict=True):
        (alone,) = pipeline.execute([p], {"model": masked})
        assert answer["attention"].shape == alone["attention"].shape
        np.testing.assert_allclose(answer["attention"], alone["attention"], atol=1e-7)
        np.testing.assert_allclose(answer["pooled"], alone["pooled"], atol=1e-7)


def test_without_pad_only_equal_item_shapes_share_a_key():
    pipeline = _pipeline({}, MASKED, masked)
    a = pipeline.prepare({"x": np.zeros((1, 3, 2), np.float32), "mask": np.ones((1, 3), bool)}, {})
    b = pipeline.prepare({"x": np.zeros((2, 3, 2), np.float32), "mask": np.ones((2, 3), bool)}, {})
    c = pipeline.prepare({"x": np.zeros((1, 4, 2), np.float32), "mask": np.ones((1, 4), bool)}, {})
    assert a.key == b.key != c.key and (a.rows, b.rows) == (1, 2)
    out = pipeline.execute([a, b], {"model": masked})
    assert [o["attention"].shape for o in out] == [(1, 3, 3), (2, 3, 3)]


def test_inputs_are_checked_against_the_completed_config():
    pipeline = _pipeline({}, MASKED, masked)
    cases = [
        ({"x": np.zeros((1, 3, 3), np.float32), "mask": np.ones((1, 3), bool)}, "input 'x' axis 2 must be 2"),
        ({"x": np.zeros((1, 3, 2), np.float32), "mask": np.ones((2, 3), bool)}, "different batch sizes"),
        ({"x": np.zeros((5, 3, 2), np.float32), "mask": np.ones((5, 3), bool)}, "over max_batch_size 4"),
        ({"x": np.zeros((1, 3, 2), np.float32), "mask": np.ones((1, 3), np.int64)}, "'mask' must be BOOL, got INT64"),
        ({"x": np.zeros((1, 3, 2), np.float32)}, "missing input(s) ['mask']"),
    ]
    for feeds, message in cases:
        with pytest.raises(InvalidInput) as err:
            pipeline.prepare(feeds, {})
        assert message in err.value.message
    fixed = _pipeline({}, sig([T("x", "float32", 2, 3)], [T("y", "float32", 2, 3)]), double)
    assert fixed.config.max_batch_size == 0 and fixed.config_dims(fixed.inputs[0]) == [2, 3]
    with pytest.raises(InvalidInput, match=r"input 'x' axis 0 must be 2 \(shape \[2, 3\]"):
        fixed.prepare({"x": np.zeros((1, 3), np.float32)}, {})
    assert fixed.run({"x": np.ones((2, 3), np.float32)}, {}, {"model": double})["y"].sum() == 12


def test_the_attnserve_tasks_keep_their_required_fields():
    done, _ = complete({}, "m", ROWWISE, double)
    for task, change, message in [
        ("sort", {"family": "pointer", "max_input_length": 0}, "task sort needs max_input_length > 0"),
        (
            "sort",
            {"family": "pointer", "max_input_length": 8, "max_batch_size": 0},
            "task sort needs max_batch_size > 0",
        ),
        ("sort", {"max_input_length": 8, "family": ""}, "task sort needs a family"),
        ("sort", {"max_input_length": 8, "family": "pointer", "pad": {"x": {"axis": 1}}}, "pad and crop are for"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelConfig.model_validate({**done, "task": task, **change})
    with pytest.raises(ValueError, match="needs batching, but max_batch_size is 0"):
        ModelConfig.model_validate({**done, "max_batch_size": 0, "dynamic_batching": None, "pad": {"x": {"axis": 1}}})


def test_a_bytes_input_pads_with_text():
    texts = sig([T("words", "bytes", "batch", "time")], [T("sizes", "int64", "batch", "time")])

    def sizes(feeds):
        return {"sizes": np.vectorize(len, otypes=[np.int64])(feeds["words"])}

    pipeline = _pipeline({"pad": {"words": {"axis": 1, "value": ""}}}, texts, sizes)
    a = pipeline.prepare({"words": np.array([[b"ab", b"c"]], dtype=object)}, {})
    b = pipeline.prepare({"words": np.array([[b"def", b"", b"gh"]], dtype=object)}, {})
    assert pipeline.crop == {"sizes": [1]}
    assert [o["sizes"].tolist() for o in pipeline.execute([a, b], {"model": sizes})] == [[[2, 1]], [[3, 0, 2]]]
    with pytest.raises(InvalidModelConfig, match="pad value 'x' of input 'x' is text, but the input is float32"):
        _pipeline({"pad": {"x": {"axis": 1, "value": "x"}}}, MASKED, masked)
