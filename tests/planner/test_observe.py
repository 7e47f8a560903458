"""The planner's observer reads the frontend metrics as /metrics serves them: one process's, or with
--api-server-count > 1 the core's plus every HTTP process's (where the requests are counted)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dynamo_mono.frontend_procs.metrics_merge import families_of, merged_exposition
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.planner.observe import FrontendObserver, server_exposition


def _finish(m: FrontendMetrics, model: str, isl: int, osl: int, ttft_s: float, itl_s: float) -> None:
    m.requests_started.labels(model, "chat").inc()
    m.isl.labels(model).observe(isl)
    m.osl.labels(model).observe(osl)
    m.ttft.labels(model).observe(ttft_s)
    m.itl.labels(model).observe(itl_s)
    m.duration.labels(model).observe(ttft_s + itl_s * osl)


async def test_interval_from_this_process() -> None:
    m = FrontendMetrics()
    obs = FrontendObserver(m, "m")
    await obs.start()
    _finish(m, "m", 100, 10, 0.2, 0.01)
    _finish(m, "m", 300, 30, 0.4, 0.03)
    _finish(m, "other", 5000, 1, 9.0, 1.0)  # another model: not counted
    o = await obs.observe()
    assert o.num_req == 2 and o.isl == pytest.approx(200) and o.osl == pytest.approx(20)
    assert o.ttft_ms == pytest.approx(300) and o.itl_ms == pytest.approx(20)
    empty = await obs.observe()  # the next interval starts where this one ended
    assert empty.num_req == 0 and empty.isl is None and empty.ttft_ms is None


async def test_requests_counted_in_http_processes_are_observed_in_the_core() -> None:
    core, http1, http2 = FrontendMetrics(), FrontendMetrics(), FrontendMetrics()
    state = SimpleNamespace(metrics=core, metrics_merge=None)
    obs = FrontendObserver(core, "m", server_exposition(state))
    await obs.start()

    async def merge(registry) -> bytes:  # what frontend_procs.core.HttpProcesses installs once they run
        return merged_exposition(registry, [families_of(http1.registry), families_of(http2.registry)])

    state.metrics_merge = merge
    _finish(http1, "m", 100, 10, 0.1, 0.01)
    _finish(http2, "m", 300, 30, 0.3, 0.03)
    o = await obs.observe()
    assert o.num_req == 2 and o.isl == pytest.approx(200) and o.ttft_ms == pytest.approx(200)
