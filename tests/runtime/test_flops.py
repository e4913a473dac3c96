"""runtime.flops: integer polynomials in the axes, their fit, per-row accounting and exact splits."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import InvalidModelConfig
from runtime.flops import (
    FLOPS_FILE,
    CallCounter,
    ComponentFlops,
    FlopsFile,
    Polynomial,
    Term,
    counted,
    counters,
    fit,
    grid,
    petaflop_s_days,
    split,
)
from runtime.tensors import TensorSpec

T = TensorSpec.of
# a Transformer-like decoder step: 100 per row, 7 per source position, 3 per cached step, 2 shared per src_len
STEP = Polynomial(
    axes=("batch", "src_len", "past_len"),
    terms=(
        Term(coef=100, powers={"batch": 1}),
        Term(coef=7, powers={"batch": 1, "src_len": 1}),
        Term(coef=3, powers={"batch": 1, "past_len": 1}),
        Term(coef=2, powers={"src_len": 1}),
    ),
)


def test_a_polynomial_is_evaluated_exactly_in_integers():
    dims = {"batch": 4, "src_len": 30, "past_len": 5}
    assert STEP.at(dims) == 400 + 7 * 4 * 30 + 3 * 4 * 5 + 2 * 30
    assert STEP.per_row(dims) == 100 + 7 * 30 + 3 * 5 + 2 * 30  # the shared term counted for the row
    assert STEP.rows_times(dims) == 4 * STEP.per_row(dims)
    assert STEP.text() == "100*batch + 7*batch*src_len + 3*batch*past_len + 2*src_len"
    big = Polynomial(axes=("batch",), terms=(Term(coef=10**12, powers={"batch": 1}),))
    assert big.rows_times({"batch": 10**6}) == 10**18  # no float rounding


def test_a_polynomial_refuses_unknown_symbols_and_superlinear_batch():
    with pytest.raises(ValueError, match="not in"):
        Polynomial(axes=("batch",), terms=(Term(coef=1, powers={"words": 1}),))
    with pytest.raises(ValueError, match="linearly with the batch"):
        Polynomial(axes=("batch",), terms=(Term(coef=1, powers={"batch": 2}),))


def test_fit_recovers_integer_coefficients_and_refuses_what_is_no_polynomial():
    axes = ("batch", "src_len", "past_len")
    points = grid(axes, dict.fromkeys(axes, (1, 2, 3))) + grid(axes, dict.fromkeys(axes, (5, 7)))
    fitted = fit(axes, [(p, STEP.at(p)) for p in points])
    assert {(t.coef, tuple(sorted(t.powers.items()))) for t in fitted.terms} == {
        (t.coef, tuple(sorted(t.powers.items()))) for t in STEP.terms
    }
    squares = [(p, p["src_len"] ** 2 * p["batch"]) for p in points]
    assert fit(axes, squares).at({"batch": 3, "src_len": 11, "past_len": 0}) == 363
    with pytest.raises(ValueError, match="no polynomial"):
        fit(axes, [(p, 2 ** p["src_len"]) for p in points])


def test_a_call_counter_reads_each_axis_off_the_feeds_even_off_a_cache_axis():
    inputs = (
        T("prev_ids", "int64", "batch"),
        T("past_k", "float32", 2, "batch", 4, "past_len", 16),
        T("src_mask", "bool", "batch", "src_len"),
    )
    counter = CallCounter(ComponentFlops(total=STEP), inputs)
    feeds = {
        "prev_ids": np.zeros(3, np.int64),
        "past_k": np.zeros((2, 3, 4, 6, 16), np.float32),
        "src_mask": np.ones((3, 20), bool),
    }
    assert counter(feeds) == 3 * STEP.per_row({"src_len": 20, "past_len": 6})


@pytest.mark.parametrize(
    ("total", "rows"), [(100, [1, 1, 1, 1]), (101, [1, 2, 3]), (7, [3, 0, 4]), (0, [2, 2]), (10**18 + 1, [3, 3, 5])]
)
def test_split_shares_sum_exactly_and_equal_rows_of_a_divisible_total_share_equally(total, rows):
    shares = split(total, rows)
    assert sum(shares) == total and all(s >= 0 for s in shares)
    if total % sum(rows) == 0:
        assert shares == [total // sum(rows) * r for r in rows]


def test_counted_runners_add_each_calls_flops():
    specs = {"step": (T("x", "float32", "batch", "src_len"),)}
    poly = Polynomial(axes=("batch", "src_len"), terms=(Term(coef=5, powers={"batch": 1, "src_len": 1}),))
    flops = FlopsFile(parameters=10, components={"step": ComponentFlops(total=poly)})
    sink: list[int] = []
    run = counted({"step": lambda f: f}, counters(flops, specs), sink)["step"]
    run({"x": np.zeros((2, 3))})
    run({"x": np.zeros((1, 4))})
    assert sink == [30, 20]


def test_flops_file_round_trips_and_is_checked_against_the_config(tmp_path):
    poly = Polynomial(axes=("batch", "src_len"), terms=(Term(coef=5, powers={"batch": 1, "src_len": 1}),))
    flops = FlopsFile(parameters=10, components={"encoder": ComponentFlops(total=poly)})
    assert FlopsFile.read(tmp_path) is None
    flops.save(tmp_path / FLOPS_FILE)
    assert FlopsFile.read(tmp_path) == flops
    flops.check({"encoder": (T("src_ids", "int64", "batch", "src_len"),)})
    with pytest.raises(InvalidModelConfig, match="counts components"):
        flops.check({"classify": (T("ids", "int64", "batch", "words"),)})
    with pytest.raises(InvalidModelConfig, match="axes its inputs lack"):
        flops.check({"encoder": (T("ids", "int64", "batch", "words"),)})
    (tmp_path / FLOPS_FILE).write_text('{"parameters": -1, "components": {}}')
    with pytest.raises(InvalidModelConfig, match=FLOPS_FILE):
        FlopsFile.read(tmp_path)


def test_petaflop_s_days():
    assert petaflop_s_days(8.64e19) == pytest.approx(1.0)
