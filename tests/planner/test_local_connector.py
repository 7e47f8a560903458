"""The planner on a real mocker server in this process: the local connector starts instances, drains them under load
without losing a request, and the planner's tick scales up and down from what the frontend observed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from dynamo_mono.cli import serve_options
from dynamo_mono.config import ConfigError, resolve
from dynamo_mono.http.app import create_app
from dynamo_mono.planner.service import prepare_specs, start_planner
from dynamo_mono.plugins import get_plugins
from dynamo_mono.server import build_state, model_specs, stop_engines
from mocker.perf_model import PerfModel
from tests.planner.profile_helper import write_profile

PLUGINS = get_plugins()
MODEL = "tiny-chatml"


async def wait_until(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll a server-side state; the timeout is a hang guard only."""
    deadline = time.monotonic() + timeout
    while not (v := cond()):
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout}s"
        await asyncio.sleep(0.02)
    return v


@pytest.fixture
async def planned(aiohttp_client, tmp_path: Path):
    made = []

    async def make(profile: PerfModel | None = None, **opts: Any):
        options = {"planner": True, "profile_results_dir": str(write_profile(tmp_path / "p", profile)),
                   "adjustment_interval": 3600.0, "port": 0, **opts}  # ticks only when the test says
        settings = resolve(serve_options(PLUGINS), options, env={})
        specs = prepare_specs(settings, model_specs(settings, PLUGINS))
        state = await build_state(settings, PLUGINS, specs)
        planner = await start_planner(state, specs)
        made.append((state, planner))
        client = await aiohttp_client(create_app(state))
        return state, planner, client

    yield make
    for state, planner in made:
        await planner.stop()
        await stop_engines(state)


async def _complete(client, max_tokens: int, i: int) -> int:
    """Completion tokens of one request (0 when it failed)."""
    resp = await client.post("/v1/completions", json={"model": MODEL, "prompt": f"request {i} " + "word " * 40,
                                                       "max_tokens": max_tokens, "ignore_eos": True})
    body = await resp.json()
    return body["usage"]["completion_tokens"] if resp.status == 200 else 0


def _active(state, inst) -> int:
    load = state.models[MODEL].pool.router.load()
    return sum(load.get(k, {}).get("active_requests", 0) for k in inst.keys())


@pytest.mark.timeout(120)
async def test_scale_down_drains_under_load_and_loses_no_request(planned) -> None:
    state, planner, client = await planned(num_instances=2, max_instances=3)
    pool = state.models[MODEL].pool
    conn = planner.connector
    # ~200 decode steps of >= 8 ms each: every request is in flight for well over a second of simulated time.
    first = [asyncio.create_task(_complete(client, 200, i)) for i in range(8)]
    insts = list(pool.instances.values())
    await wait_until(lambda: all(_active(state, i) > 0 for i in insts), "requests on both instances")
    await conn.apply({"agg": 1}, "test: scale down under load")
    draining = [i for i in insts if i.draining]
    assert len(draining) == 1
    gone = draining[0]
    in_flight_at_drain = _active(state, gone)
    assert in_flight_at_drain > 0
    # Requests sent while it drains go to the other instance only: the draining one's count never rises.
    later = [asyncio.create_task(_complete(client, 50, 100 + i)) for i in range(4)]
    seen = [in_flight_at_drain]
    while gone.worker_id in pool.instances:
        seen.append(_active(state, gone))
        await asyncio.sleep(0.02)
    assert all(b <= a for a, b in zip(seen, seen[1:])), seen
    await conn.idle()
    results = await asyncio.gather(*first, *later)
    assert results == [200] * 8 + [50] * 4  # every request finished in full: none lost
    assert list(pool.instances) == [i.worker_id for i in insts if i is not gone]
    assert state.metrics.failures.collect()[0].samples == []
    assert conn.running("agg") == 1

    # Scale up again: the new instance joins routing and takes requests.
    await conn.apply({"agg": 2}, "test: scale up")
    assert conn.running("agg") == 2
    new = next(i for i in pool.instances.values() if i not in insts)
    more = [asyncio.create_task(_complete(client, 100, 200 + i)) for i in range(6)]
    await wait_until(lambda: _active(state, new) > 0, "a request on the new instance")
    assert await asyncio.gather(*more) == [100] * 6


@pytest.mark.timeout(120)
async def test_planner_tick_scales_up_then_down_from_observed_load(planned) -> None:
    # A profile that claims ~0.01 token/s per instance: any observed traffic asks for the most instances.
    slow = PerfModel(prefill_base_ms=1e5, prefill_ms_per_token=1e5, decode_base_ms=1e5)
    state, planner, client = await planned(profile=slow, num_instances=1, max_instances=3, correction=False)
    assert await asyncio.gather(*(_complete(client, 5, i) for i in range(6))) == [5] * 6
    decision = await planner.tick()
    assert decision.targets == {"agg": 3}
    assert planner.connector.running("agg") == 3
    text = await (await client.get("/metrics")).text()
    assert 'dynamo_planner_instances{model="tiny-chatml",role="agg"} 3.0' in text
    assert 'dynamo_planner_target_instances{model="tiny-chatml",role="agg"} 3.0' in text
    assert 'dynamo_planner_predicted_requests{model="tiny-chatml"} 6.0' in text
    # An interval without requests: the prediction is 0 requests, so back to --min-instances (drained).
    decision = await planner.tick()
    assert decision.targets == {"agg": 1}
    await planner.connector.idle()
    assert len(state.models[MODEL].pool.instances) == 1


@pytest.mark.timeout(120)
async def test_disaggregated_pools(planned) -> None:
    state, planner, client = await planned(num_instances=1, planner_mode="disagg", speedup_ratio=0.0)
    pool = state.models[MODEL].pool
    assert sorted(i.role for i in pool.instances.values()) == ["decode", "prefill"]  # min 1 prefill started
    assert await _complete(client, 8, 0) == 8
    await planner.connector.apply({"prefill": 2, "decode": 1}, "test")
    assert sorted(i.role for i in pool.instances.values()) == ["decode", "prefill", "prefill"]
    assert await asyncio.gather(*(_complete(client, 8, i) for i in range(4))) == [8] * 4


@pytest.mark.parametrize("opts, match", [
    ({"ttft": 200.0}, "--ttft apply only with --planner"),
    ({"planner": True}, "needs --profile-results-dir"),
    ({"planner": True, "enable_throughput_scaling": False}, "needs --enable-throughput-scaling or"),
    ({"planner": True, "enable_throughput_scaling": False, "enable_load_scaling": True,
      "planner_connector": "command"}, "needs --planner-command"),
    ({"planner": True, "enable_throughput_scaling": False, "enable_load_scaling": True, "min_instances": 3,
      "max_instances": 2}, "below --min-instances"),
    ({"planner": True, "profile_results_dir": "/nonexistent"}, "neither"),
    ({"planner": True, "enable_throughput_scaling": False, "enable_load_scaling": True,
      "disaggregation_mode": "prefill"}, "--planner-mode agg plans whole-request"),
])
def test_planner_configuration_errors(opts, match) -> None:
    settings = resolve(serve_options(PLUGINS), opts, env={})
    with pytest.raises(ConfigError, match=match):
        prepare_specs(settings, model_specs(settings, PLUGINS))


def test_planner_env_without_planner_is_refused() -> None:
    settings = resolve(serve_options(PLUGINS), {}, env={"DYN_PLANNER_ITL": "20"})
    with pytest.raises(ConfigError, match="DYN_PLANNER_ITL apply only with --planner"):
        prepare_specs(settings, model_specs(settings, PLUGINS))


def test_unimplemented_predictor_is_refused() -> None:
    with pytest.raises(ConfigError, match="load-predictor.*constant, kalman"):
        resolve(serve_options(PLUGINS), {"load_predictor": "prophet"}, env={})


@pytest.mark.timeout(120)
async def test_load_loop_scales_from_sampled_load_in_dry_run(planned) -> None:
    # The profile says one instance prefills almost nothing within the TTFT target, so every load tick with traffic
    # finds all instances over it: +1 per tick up to the maximum. Dry-run: only the target moves.
    slow = PerfModel(prefill_base_ms=1e5, prefill_ms_per_token=1e5)
    state, planner, client = await planned(profile=slow, num_instances=1, max_instances=3, enable_load_scaling=True,
                                           load_adjustment_interval=0.2, load_metric_samples=2,
                                           planner_connector="dry-run")
    stop = asyncio.Event()

    async def traffic() -> None:
        i = 0
        while not stop.is_set():
            assert await _complete(client, 20, i) == 20
            i += 1

    tasks = [asyncio.create_task(traffic()) for _ in range(2)]
    try:
        await wait_until(lambda: planner.state.targets == {"agg": 3}, "the load loop to reach --max-instances")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert planner.connector.running("agg") == 1  # dry-run changed nothing
    text = await (await client.get("/metrics")).text()
    assert 'dynamo_planner_target_instances{model="tiny-chatml",role="agg"} 3.0' in text
    assert any(d.kind == "load" and "above" in d.reason for d in planner.state.decisions)
