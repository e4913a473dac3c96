"""runtime.percentiles: the one percentile the benchmarks and `attnserve report` use."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.percentiles import percentile


def test_linear_between_the_closest_ranks():
    values = [4.0, 1.0, 3.0, 2.0]  # sorted: 1 2 3 4
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(np.arange(101.0), 99) == 99.0


def test_no_values_and_bad_q():
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)
