"""Load predictors: the next interval's value of a series (request count, ISL, OSL) from the values so far."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class LoadPredictor(Protocol):
    def add(self, value: float) -> None: ...

    def predict(self) -> float | None:
        """The next value; None before the first observation."""


class ConstantPredictor:
    """The next value is the last one (Dynamo's `constant`)."""

    def __init__(self) -> None:
        self.last: float | None = None

    def add(self, value: float) -> None:
        self.last = float(value)

    def predict(self) -> float | None:
        return self.last


class KalmanPredictor:
    """Local linear trend model (level + trend) filtered with a Kalman filter (Dynamo's `kalman`): state
    x = [level, trend], x' = F x with F = [[1, 1], [0, 1]], process noise diag(q_level, q_trend), measurement
    noise r. Predicts level + trend once it has min_points observations; the last value before that. Never
    negative (a count or a length)."""

    F = np.array([[1.0, 1.0], [0.0, 1.0]])
    H = np.array([[1.0, 0.0]])

    def __init__(self, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0, min_points: int = 5) -> None:
        self.Q = np.diag([q_level, q_trend])
        self.r = r
        self.min_points = min_points
        self.n = 0
        self.last: float | None = None
        self.x = np.zeros(2)
        self.P = np.eye(2) * 1e3

    def add(self, value: float) -> None:
        z = float(value)
        if self.n == 0:
            self.x = np.array([z, 0.0])
        else:
            x = self.F @ self.x  # predict
            P = self.F @ self.P @ self.F.T + self.Q
            s = float((self.H @ P @ self.H.T)[0, 0]) + self.r  # update
            k = (P @ self.H.T)[:, 0] / s
            self.x = x + k * (z - x[0])
            self.P = (np.eye(2) - np.outer(k, self.H[0])) @ P
        self.n += 1
        self.last = z

    def predict(self) -> float | None:
        if self.last is None:
            return None
        if self.n < self.min_points:
            return self.last
        return max(0.0, float(self.x[0] + self.x[1]))


def make_predictor(name: str, *, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0,
                   min_points: int = 5) -> LoadPredictor:
    """A predictor by its --load-predictor name; ValueError for names not implemented here."""
    if name == "constant":
        return ConstantPredictor()
    if name == "kalman":
        return KalmanPredictor(q_level, q_trend, r, min_points)
    raise ValueError(f"load predictor {name!r} is not implemented (constant, kalman)")
