"""The planner's decisions with a fake connector and scripted observations: load ticks, floors, metrics."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from dynamo_mono.planner.config import PlannerConfig
from dynamo_mono.planner.loop import InstanceLoadSample, Planner
from dynamo_mono.planner.metrics import METRIC_NAMES, PlannerMetrics
from dynamo_mono.planner.throughput import Observation


class FakeConnector:
    def __init__(self, **running: int) -> None:
        self.counts = dict(running)
        self.applied: list[dict[str, int]] = []

    def running(self, role: str) -> int:
        return self.counts.get(role, 0)

    async def apply(self, targets: dict[str, int], reason: str) -> None:
        self.applied.append(dict(targets))
        self.counts.update(targets)

    async def close(self) -> None:
        pass


class ScriptedObserver:
    def __init__(self) -> None:
        self.next: list[Observation] = []

    async def observe(self) -> Observation:
        return self.next.pop(0)


def _planner(registry: CollectorRegistry, **cfg) -> tuple[Planner, FakeConnector, ScriptedObserver]:
    config = PlannerConfig(enable_throughput_scaling=False, enable_load_scaling=True, ttft_ms=500, itl_ms=50,
                           load_min_observations=3, max_instances=4, **cfg)
    conn = FakeConnector(agg=2)
    obs = ScriptedObserver()
    model = SimpleNamespace(name="m", pool=SimpleNamespace(instances={}))
    p = Planner(config, model, conn, PlannerMetrics(registry, "m"), ScriptedObserver(), obs, None)
    return p, conn, obs


def _loads(*prefill: float, blocks: float = 10) -> dict[str, list[InstanceLoadSample]]:
    return {"agg": [InstanceLoadSample(p, blocks) for p in prefill]}


async def test_load_ticks_learn_then_scale_up_and_down() -> None:
    p, conn, obs = _planner(CollectorRegistry())
    # TTFT = 0.25 ms per (queued prefill token + ISL 1000): 500 ms is met up to 2000 - 1000 = 1000 queued tokens.
    for queued, itl_blocks in ((0, 10), (400, 20), (800, 30)):
        obs.next.append(Observation(5, 10, isl=1000, osl=100, ttft_ms=0.25 * (queued + 1000), itl_ms=10 + 0.1 *
                                    itl_blocks))
        v = await p.load_tick(_loads(queued, queued, blocks=itl_blocks))
    assert conn.applied == []  # learning, and within the target
    obs.next.append(Observation(5, 10, isl=1000, osl=100, ttft_ms=0.25 * 2500, itl_ms=12))
    v = await p.load_tick(_loads(1500, 1200))  # both instances over 2000 (queued + ISL)
    assert v["agg"].delta == 1 and conn.applied[-1] == {"agg": 3}
    obs.next.append(Observation(5, 10, isl=1000, osl=100, ttft_ms=260, itl_ms=11))
    v = await p.load_tick(_loads(20, 0, 10, blocks=1))  # 3 instances all under 2000 * 2/3 * 0.8 = 1067 and ITL low
    assert v["agg"].delta == -1 and conn.applied[-1] == {"agg": 2}


async def test_load_scaling_never_goes_below_the_throughput_floor() -> None:
    p, conn, obs = _planner(CollectorRegistry())
    p.state.floors = {"agg": 2}
    for queued in (0, 400, 800):
        obs.next.append(Observation(5, 10, 1000, 100, 0.25 * (queued + 1000), 10 + 0.01 * queued))
        await p.load_tick(_loads(queued, queued, blocks=queued))
    obs.next.append(Observation(5, 10, 100, 100, 30, 10))  # short prompts now: 100 < 2000 * 1/2 * 0.8
    v = await p.load_tick(_loads(0, 0, blocks=0))
    assert v["agg"].delta == -1 and conn.applied == []  # wanted down, but 2 is the floor


async def test_planner_gauges_have_the_dashboard_names() -> None:
    reg = CollectorRegistry()
    p, conn, obs = _planner(reg)
    await p.ensure_bounds()
    text = generate_latest(reg).decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name} gauge" in text
    assert 'dynamo_planner_instances{model="m",role="agg"} 2.0' in text
    assert 'dynamo_planner_target_instances{model="m",role="agg"} 2.0' in text


async def test_the_profile_bounds_ttft_load_before_the_regression_has_learned(tmp_path) -> None:
    from dynamo_mono.planner.interpolation import load_profile_dir
    from tests.planner.profile_helper import write_profile

    config = PlannerConfig(enable_throughput_scaling=True, enable_load_scaling=True, ttft_ms=500, itl_ms=50,
                           adjustment_interval=60, max_instances=4, profile_results_dir=str(tmp_path))
    conn = FakeConnector(agg=2)
    obs = ScriptedObserver()
    p = Planner(config, SimpleNamespace(name="m", pool=SimpleNamespace(instances={})), conn,
                PlannerMetrics(CollectorRegistry(), "m"), ScriptedObserver(), obs,
                load_profile_dir(str(write_profile(tmp_path))))
    limit = p.scaler.prefill.tokens_within(500)  # ~7000 tokens of the default perf model within 500 ms
    obs.next.append(Observation(5, 10, isl=1000, osl=100, ttft_ms=900, itl_ms=10))
    v = await p.load_tick(_loads(limit - 900, limit))  # both over limit - ISL queued: one regression sample only
    assert v["agg"].delta == 1 and conn.applied[-1] == {"agg": 3}
