"""The rule that keeps an int8 twin (exporters.int8.decide): at least 10 % faster at batch 1 or 16,
and at most 1 point below fp32's task metric; the reason says which failed."""

from __future__ import annotations

import pytest

from exporters.int8 import BatchSpeed, decide


def speeds(b1: float, b16: float) -> list[BatchSpeed]:
    return [
        BatchSpeed(batch=b, fp32_items_per_s=100.0, int8_items_per_s=100.0 * r, ratio=r, rounds=[r])
        for b, r in ((1, b1), (16, b16))
    ]


@pytest.mark.parametrize(
    ("b1", "b16", "fp32", "int8", "keep", "said"),
    [
        (1.23, 1.35, 1.0, 0.9995, True, "1.23x fp32 at batch 1"),  # dates-additive, measured
        (0.95, 1.06, 0.8, 0.8, False, "not 10% faster at any batch size"),  # debian-han, measured
        (1.00, 1.10, 0.9, 0.9, True, "1.10x fp32 at batch 16"),  # exactly 10 % at one batch size
        (1.09, 1.09, 0.9, 0.9, False, "not 10% faster"),
        (1.50, 1.50, 0.95, 0.939, False, "below fp32's (more than 0.01)"),  # fast, but 1.1 points worse
        (1.50, 1.50, 0.95, 0.94, True, "metric 0.9400 vs fp32 0.9500"),  # 1 point: allowed
    ],
)
def test_the_twin_is_kept_only_where_it_pays(b1, b16, fp32, int8, keep, said):
    decision = decide(speeds(b1, b16), fp32, int8)
    assert decision.keep is keep
    assert said in decision.reason, decision.reason
