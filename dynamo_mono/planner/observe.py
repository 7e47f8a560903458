"""What the planner reads from the server: the frontend's per-model counters and histograms; differences between
two reads give an interval's arrivals (requests started: unlike finished requests, they do not flatten at the
capacity of too few instances) and the mean ISL, OSL, TTFT, ITL and duration of the requests that finished."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from prometheus_client import Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

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


Exposition = Callable[[], Awaitable[bytes]]


def _family_name(metric: Counter | Histogram) -> str:
    return metric.describe()[0].name


def _sums(text: str, model: str, names: set[str]) -> dict[str, float]:
    """{sample name: value summed over the model's label sets} for the samples of the named families."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in names:
            continue
        for s in family.samples:
            if s.labels.get("model") == model:
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def server_exposition(state: Any) -> Exposition:
    """The server's /metrics text: with --api-server-count > 1 the core's registry plus every HTTP process's (the
    hook is set once they run, so it is looked up at each read), else this process's registry."""
    async def read() -> bytes:
        merge = state.metrics_merge
        return await merge(state.metrics.registry) if merge is not None else generate_latest(state.metrics.registry)
    return read


def _own(metrics: FrontendMetrics) -> Exposition:
    async def read() -> bytes:
        return generate_latest(metrics.registry)
    return read


class FrontendObserver:
    """Interval observations of one model from the frontend metrics, read as /metrics serves them (with
    --api-server-count > 1 the HTTP processes' samples summed in), as Dynamo's planner reads Prometheus."""

    def __init__(self, metrics: FrontendMetrics, model: str, exposition: Exposition | None = None) -> None:
        self.model = model
        self._exposition = exposition or _own(metrics)
        self._started = _family_name(metrics.requests_started)
        self._hist = {k: _family_name(h) for k, h in (("isl", metrics.isl), ("osl", metrics.osl), ("ttft", metrics.ttft),
                                                       ("itl", metrics.itl), ("duration", metrics.duration))}
        self._last: _Totals | None = None

    async def _read(self) -> _Totals:
        text = (await self._exposition()).decode()
        v = _sums(text, self.model, {self._started, *self._hist.values()})

        def sc(key: str) -> tuple[float, float]:
            name = self._hist[key]
            return v.get(name + "_sum", 0.0), v.get(name + "_count", 0.0)

        isl_sum, isl_count = sc("isl")
        return _Totals(time.monotonic(), v.get(self._started + "_total", 0.0), isl_count, isl_sum, sc("osl")[0],
                       sc("ttft"), sc("itl"), sc("duration"))

    async def start(self) -> None:
        """Take the first reading (the first interval starts here)."""
        self._last = await self._read()

    async def observe(self) -> Observation:
        """The interval since the previous call (or start())."""
        now = await self._read()
        last = self._last or now
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
