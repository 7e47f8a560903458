"""Load-based scaling: the regression, its inversion, and the all-over / all-under rule."""

from __future__ import annotations

import pytest

from dynamo_mono.planner.load_scaler import LoadRegression, LoadVerdict, combine, judge


def test_regression_fits_and_inverts() -> None:
    reg = LoadRegression(window=50, min_observations=3)
    for load in (100, 200, 300, 400):
        reg.add(load, 20 + 0.5 * load)  # TTFT = 20 ms + 0.5 ms per queued token
    intercept, slope = reg.fit()
    assert (intercept, slope) == pytest.approx((20.0, 0.5))
    assert reg.max_load(220.0) == pytest.approx(400.0)


def test_regression_needs_enough_spread_samples() -> None:
    reg = LoadRegression(window=50, min_observations=3)
    reg.add(100, 50)
    reg.add(200, 60)
    assert reg.max_load(100) is None  # 2 < min_observations
    flat = LoadRegression(window=50, min_observations=2)
    for _ in range(5):
        flat.add(100, 50)
    assert flat.max_load(100) is None  # no load spread
    falling = LoadRegression(window=50, min_observations=2)
    falling.add(100, 50)
    falling.add(200, 40)
    assert falling.max_load(100) is None  # latency does not grow with load: nothing to invert


def test_regression_keeps_only_the_window() -> None:
    reg = LoadRegression(window=3, min_observations=3)
    for load, lat in ((1, 1000), (10, 10), (20, 20), (30, 30)):
        reg.add(load, lat)
    assert reg.fit() == pytest.approx((0.0, 1.0))  # the first (outlier) sample has left the window


def test_judge_scales_up_only_when_all_are_over() -> None:
    assert judge([500, 600], 400, 80, "x").delta == 1
    assert judge([500, 300], 400, 80, "x").delta == 0


def test_judge_scales_down_only_when_all_are_well_under() -> None:
    # 3 instances, max 400: down when all < 400 * 2/3 * 0.8 = 213.3
    assert judge([200, 210, 100], 400, 80, "x").delta == -1
    assert judge([200, 220, 100], 400, 80, "x").delta == 0
    assert judge([10], 400, 80, "x").delta == 0  # never below one instance
    assert judge([1, 1], 400, 0, "x").delta == 0  # sensitivity 0: never down
    assert judge([500], None, 80, "x").delta == 0  # no regression yet


def test_combine_for_aggregated_instances() -> None:
    up, down, hold = LoadVerdict(1, "u"), LoadVerdict(-1, "d"), LoadVerdict(0, "h")
    assert combine(up, down).delta == 1 and combine(down, up).delta == 1
    assert combine(down, down).delta == -1
    assert combine(down, hold).delta == 0
