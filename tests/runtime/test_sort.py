"""The sort pipeline over the fake pointer network (which picks the smallest remaining value)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from runtime.errors import InvalidInput
from runtime.pipelines.sort import SortPipeline
from tests.helpers.fakes import Served


@pytest.fixture
def model(served: Callable[[str], Served]) -> Served:
    return served("sorter")


def values(*rows: list[int]) -> dict[str, np.ndarray]:
    return {"values": np.array(rows, dtype=np.int64)}


def test_order_and_attention(model: Served):
    out = model.run(values([42, 7, 93, 15, 61], [0, 99, 1, 98, 50]))
    assert set(out) == {"order", "attention"}
    assert out["order"].dtype == np.int64 and out["attention"].dtype == np.float32
    assert out["order"].tolist() == [[1, 3, 0, 4, 2], [0, 2, 4, 3, 1]]
    assert out["attention"].shape == (2, 5, 5)  # [B, steps, N]
    np.testing.assert_allclose(out["attention"].sum(-1), 1.0, rtol=1e-6)
    for b in range(2):  # each step's weight lies on positions not yet emitted
        for t in range(5):
            assert (out["attention"][b, t, out["order"][b, :t]] == 0).all()


@pytest.mark.parametrize("n", [1, 12])
def test_the_length_limits_are_inclusive(model: Served, n: int):
    row = list(range(n, 0, -1))
    assert model.run(values(row))["order"].tolist() == [list(range(n - 1, -1, -1))]


def test_requests_group_rows_by_length_and_answers_drop_padding(model: Served):
    sources = [(3, 1, 2), (9, 8), (5, 4, 6), (1,), (2, 0, 1)]
    batches = list(SortPipeline.requests(sources, batch=2))
    assert [rows for rows, _ in batches] == [[3], [1], [0, 2], [4]]
    for rows, inputs in batches:
        assert inputs["values"].dtype == np.int64 and inputs["values"].tolist() == [list(sources[i]) for i in rows]
    answers = {}
    for rows, inputs in batches:
        answers.update(zip(rows, SortPipeline.answers(model.run(inputs)), strict=True))
    assert [answers[i] for i in range(len(sources))] == [(1, 2, 0), (1, 0), (1, 0, 2), (0,), (1, 2, 0)]
    assert SortPipeline.answers({"order": np.array([[2, 0, -1, -1]])}) == [(2, 0)]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"values": np.zeros((1, 0), np.int64)}, "input 'values' has 0 values per row; this model takes 1 to 12"),
        ({"values": np.arange(13)[None]}, "input 'values' has 13 values per row; this model takes 1 to 12"),
        (values([3, -1, 2]), "values must lie in [0, 100), got min -1 and max 3"),
        (values([3, 100, 2]), "values must lie in [0, 100), got min 2 and max 100"),
        (values([3, 1, 2], [4, 4, 5]), "row 1 of 'values' has repeated values; the model sorts distinct integers"),
        ({"values": np.array([[3, 1]], np.int32)}, "input 'values' must be INT64, got INT32"),
        ({"values": np.array([[3.0, 1.0]])}, "input 'values' must be INT64, got FP64"),
        ({"values": np.array([3, 1], np.int64)}, "input 'values' must have rank 2 (shape [-1, -1]), got shape [2]"),
        ({"values": np.zeros((0, 3), np.int64)}, "input 'values' is empty: send at least one item"),
        ({"values": np.tile(np.arange(3), (9, 1))}, "input 'values' has batch 9, over max_batch_size 8"),
    ],
)
def test_bad_values_are_refused(model: Served, inputs: dict, message: str):
    with pytest.raises(InvalidInput) as err:
        model.run(inputs)
    assert err.value.message == message


def test_sort_takes_no_parameters(model: Served):
    with pytest.raises(InvalidInput) as err:
        model.run(values([2, 1]), beam_size=2)
    assert err.value.message == "unknown parameter 'beam_size' for a sort model; known: []"
