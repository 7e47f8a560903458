"""Load-based scaling between throughput intervals: linear regressions of latency on per-instance load, inverted
to the largest load that meets the target; +1 instance when every instance is over it, -1 when all are well under.

TTFT is regressed on queued prefill tokens per instance plus the ISL (the prompt waits behind them and is then
computed itself); ITL on active decode KV blocks per instance (Dynamo's load-based planner)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


class LoadRegression:
    """Least-squares line latency = a + b * load over the latest `window` samples."""

    def __init__(self, window: int, min_observations: int) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=window)
        self.min_observations = min_observations

    def add(self, load: float, latency_ms: float) -> None:
        self.samples.append((float(load), float(latency_ms)))

    def fit(self) -> tuple[float, float] | None:
        """(intercept, slope), or None with too few samples or no load spread."""
        if len(self.samples) < self.min_observations:
            return None
        x, y = np.array(self.samples).T
        if np.ptp(x) <= 0:
            return None
        slope, intercept = np.polyfit(x, y, 1)
        return float(intercept), float(slope)

    def max_load(self, target_ms: float) -> float | None:
        """Largest load whose predicted latency meets target_ms; None when the fit is missing or latency does not
        grow with load (nothing to invert)."""
        fit = self.fit()
        if fit is None or fit[1] <= 0:
            return None
        intercept, slope = fit
        return max(0.0, (target_ms - intercept) / slope)


@dataclass(frozen=True)
class LoadVerdict:
    delta: int  # +1, -1 or 0
    reason: str


def judge(loads: list[float], max_load: float | None, sensitivity: int, what: str) -> LoadVerdict:
    """+1 when every instance's load is above max_load; -1 when all are below max_load * (n-1)/n * sensitivity/100
    (the load would still fit on one instance fewer, with margin); else 0."""
    n = len(loads)
    if max_load is None or n == 0:
        return LoadVerdict(0, f"{what}: regression not ready")
    if all(x > max_load for x in loads):
        return LoadVerdict(1, f"{what}: all {n} instance(s) above {max_load:.1f} (loads {_fmt(loads)})")
    low = max_load * (n - 1) / n * sensitivity / 100.0
    if n > 1 and all(x < low for x in loads):
        return LoadVerdict(-1, f"{what}: all {n} instances below {low:.1f} (loads {_fmt(loads)}; max {max_load:.1f})")
    return LoadVerdict(0, f"{what}: loads {_fmt(loads)} within target (max {max_load:.1f})")


def combine(ttft: LoadVerdict, itl: LoadVerdict) -> LoadVerdict:
    """Aggregated instances serve both: up when either latency is over, down only when both are under."""
    if ttft.delta > 0 or itl.delta > 0:
        return LoadVerdict(1, "; ".join(v.reason for v in (ttft, itl) if v.delta > 0))
    if ttft.delta < 0 and itl.delta < 0:
        return LoadVerdict(-1, f"{ttft.reason}; {itl.reason}")
    return LoadVerdict(0, f"{ttft.reason}; {itl.reason}")


def _fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.0f}" for x in xs) + "]"
