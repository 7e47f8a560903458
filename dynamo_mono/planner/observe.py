"""What the planner reads from the server: the frontend's per-model counters and histograms; differences between
two reads give an interval's arrivals (requests started: unlike finished requests, they do not flatten at the
capacity of too few instances) and the mean ISL, OSL, TTFT, ITL and duration of the requests that finished."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.planner.throughput import Observation


@dataclass(frozen=True)
class _Totals:
    at: float
    started: float
    count: float
    isl: float
    osl: float
    ttft: tuple[float, float]  # (sum seconds, count)
    itl: tuple[float, float]
    duration: tuple[float, float]


def _started(family: Counter, model: str) -> float:
    return sum(s.value for metric in family.collect() for s in metric.samples
               if s.name.endswith("_total") and s.labels.get("model") == model)


def _sum_count(family: Histogram, model: str) -> tuple[float, float]:
    total = count = 0.0
    for metric in family.collect():
        for s in metric.samples:
            if s.labels.get("model") != model:
                continue
            if s.name.endswith("_sum"):
                total = s.value
            elif s.name.endswith("_count"):
                count = s.value
    return total, count


class FrontendObserver:
    """Interval observations of one model from the frontend metrics (as Dynamo's planner reads Prometheus)."""

    def __init__(self, metrics: FrontendMetrics, model: str) -> None:
        self.metrics = metrics
        self.model = model
        self._last = self._read()

    def _read(self) -> _Totals:
        m, name = self.metrics, self.model
        isl_sum, isl_count = _sum_count(m.isl, name)
        osl_sum, _ = _sum_count(m.osl, name)
        return _Totals(time.monotonic(), _started(m.requests_started, name), isl_count, isl_sum, osl_sum, _sum_count(m.ttft, name),
                       _sum_count(m.itl, name), _sum_count(m.duration, name))

    def observe(self) -> Observation:
        """The interval since the previous call."""
        now, last = self._read(), self._last
        self._last = now
        n = now.count - last.count  # finished: the means are over these
        duration = max(1e-9, now.at - last.at)

        def mean(a: tuple[float, float], b: tuple[float, float], scale: float = 1.0) -> float | None:
            dn = a[1] - b[1]
            return (a[0] - b[0]) / dn * scale if dn > 0 else None

        return Observation(duration_s=duration, num_req=now.started - last.started,
                           isl=(now.isl - last.isl) / n if n > 0 else None,
                           osl=(now.osl - last.osl) / n if n > 0 else None,
                           ttft_ms=mean(now.ttft, last.ttft, 1000.0), itl_ms=mean(now.itl, last.itl, 1000.0),
                           request_duration_s=mean(now.duration, last.duration))
