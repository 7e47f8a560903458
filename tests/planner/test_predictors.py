"""Load predictors: constant repeats, Kalman follows a trend, unknown names are refused."""

from __future__ import annotations

import pytest

from dynamo_mono.planner.predictors import ConstantPredictor, KalmanPredictor, make_predictor


def test_constant_predicts_the_last_value() -> None:
    p = ConstantPredictor()
    assert p.predict() is None
    for v in (3, 9, 4):
        p.add(v)
    assert p.predict() == 4


def test_kalman_returns_the_last_value_until_min_points() -> None:
    p = KalmanPredictor(min_points=3)
    assert p.predict() is None
    p.add(10)
    p.add(20)
    assert p.predict() == 20


def test_kalman_extrapolates_a_linear_trend() -> None:
    p = KalmanPredictor(q_level=1.0, q_trend=0.1, r=1.0, min_points=5)
    for t in range(40):
        p.add(100 + 10 * t)
    assert p.predict() == pytest.approx(100 + 10 * 40, rel=0.02)  # the next point, not the last (490)


def test_kalman_smooths_noise_around_a_level() -> None:
    p = KalmanPredictor(q_level=0.01, q_trend=0.001, r=100.0, min_points=5)
    for t in range(60):
        p.add(50 + (8 if t % 2 else -8))
    assert abs(p.predict() - 50) < 4  # the constant predictor would say 42 or 58


def test_kalman_never_predicts_a_negative_load() -> None:
    p = KalmanPredictor(r=0.1, min_points=2)
    for v in (100, 50, 5, 0, 0):
        p.add(v)
    assert p.predict() >= 0


def test_make_predictor_refuses_unimplemented_names() -> None:
    assert isinstance(make_predictor("kalman"), KalmanPredictor)
    with pytest.raises(ValueError, match="arima"):
        make_predictor("arima")
