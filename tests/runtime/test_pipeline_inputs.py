"""What every pipeline checks before it runs anything: the inputs' names, datatypes, ranks and
batch size (Pipeline.check_inputs), and building a pipeline from a config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InvalidInput
from runtime.pipelines.base import bytes_tensor
from runtime.pipelines.classify import ClassifyPipeline
from runtime.pipelines.factory import build_pipeline, pipeline_class
from runtime.pipelines.sort import SortPipeline
from runtime.pipelines.translate import TranslatePipeline
from tests.helpers.fakes import FAKES, Served

GOOD = {
    "copy-gru": {"text": bytes_tensor(["abc"])},
    "copy-transformer": {"text": bytes_tensor(["abc"])},
    "sorter": {"values": np.array([[3, 1, 2]], dtype=np.int64)},
    "keywords": {"text": bytes_tensor(["A game."])},
}


@pytest.fixture(params=list(FAKES))
def model(request: pytest.FixtureRequest, served: Callable[[str], Served]) -> tuple[Served, str, np.ndarray]:
    inputs = GOOD[request.param]
    name, array = next(iter(inputs.items()))
    return served(request.param), name, array


def refused(model: Served, inputs: dict) -> str:
    with pytest.raises(InvalidInput) as err:
        model.run(inputs)
    return err.value.message


def test_the_good_request_runs(model):
    served, name, array = model
    assert served.run({name: array})


def test_missing_and_unexpected_inputs(model):
    served, name, array = model
    label = served.pipeline.config.name
    assert refused(served, {}) == f"missing input(s) ['{name}']; model '{label}' takes ['{name}']"
    assert refused(served, {name: array, "extra": array}) == (
        f"unexpected input(s) ['extra']; model '{label}' takes ['{name}']"
    )


def test_wrong_datatype(model):
    served, name, array = model
    expected = served.pipeline.inputs[0].datatype
    wrong = np.zeros(array.shape, dtype=np.float32)
    assert refused(served, {name: wrong}) == f"input '{name}' must be {expected}, got FP32"
    assert refused(served, {name: np.ones(array.shape, dtype=bool)}) == f"input '{name}' must be {expected}, got BOOL"


def test_wrong_rank(model):
    served, name, array = model
    spec = served.pipeline.inputs[0]
    wrong = array[..., None]
    assert refused(served, {name: wrong}) == (
        f"input '{name}' must have rank {spec.rank} (shape {list(spec.shape)}), got shape {list(wrong.shape)}"
    )


def test_empty_batch_and_batch_over_the_limit(model):
    served, name, array = model
    assert refused(served, {name: array[:0]}) == f"input '{name}' is empty: send at least one item"
    big = np.repeat(array, 9, axis=0)  # max_batch_size is 8
    assert refused(served, {name: big}) == f"input '{name}' has batch 9, over max_batch_size 8"
    assert served.run({name: np.repeat(array, 8, axis=0)})  # 8 is allowed


def test_a_text_tensor_of_numpy_strings_is_refused(served: Callable[[str], Served]):
    message = refused(served("copy-gru"), {"text": np.array(["abc"])})
    assert message == "input 'text' must be BYTES, got <U3"


def test_pipeline_class_per_task():
    assert pipeline_class("translate") is TranslatePipeline
    assert pipeline_class("sort") is SortPipeline
    assert pipeline_class("classify") is ClassifyPipeline
    with pytest.raises(
        ValueError, match="unknown task 'summarize'; known: \\['classify', 'sort', 'tensors', 'translate'\\]"
    ):
        pipeline_class("summarize")


def test_a_config_without_what_its_task_needs_is_refused(fake_repository: Path):
    gru, han = FAKES["copy-gru"]().config, FAKES["keywords"]().config
    with pytest.raises(ValueError, match="a translate model needs a decode loop"):
        build_pipeline(gru.model_copy(update={"decode": None}), fake_repository / gru.name / "1")
    with pytest.raises(ValueError, match="a classify model needs labels"):
        build_pipeline(han.model_copy(update={"labels": []}), fake_repository / han.name / "1")
