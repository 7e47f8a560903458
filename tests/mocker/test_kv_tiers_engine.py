"""Mocker engine with offload tiers: options reach the pools, kvbm_* metrics are reported and exported."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from dynamo_mono.http.system_routes import refresh_engine_gauges
from dynamo_mono.metrics import FrontendMetrics
from tests.mocker.conftest import collect, make_engine, make_request


async def test_evicted_prefix_is_onboarded_from_host_and_metrics_count_it() -> None:
    eng = make_engine(num_gpu_blocks_override=12, block_size=4, kv_host_blocks=64)
    a = [(i * 7 + 3) % 250 for i in range(33)]
    b = [(i * 11 + 5) % 250 for i in range(33)]
    for rid, toks in (("a1", a), ("b", b), ("a2", a)):
        await collect(eng, make_request(rid, toks, max_tokens=2))
    kvbm = eng.load_metrics()[0].kvbm
    assert kvbm is not None
    assert kvbm.offload_blocks_d2h > 0
    assert kvbm.onboard_blocks_h2d > 0 and kvbm.matched_tokens == kvbm.onboard_blocks_h2d * 4
    assert 0 < kvbm.host_cache_hit_rate <= 1

    # exported on /metrics under Dynamo's names
    reg = CollectorRegistry()
    m = FrontendMetrics(reg)
    inst = SimpleNamespace(engine=eng, worker_id=1, role="agg", card=SimpleNamespace(dp_size=1, total_kv_blocks=12,
                                                                         media_input=None))
    pool = SimpleNamespace(ready_instances=lambda: [inst], serving_instances=lambda: [inst], instances={1: inst})
    state = SimpleNamespace(metrics=m, models={"m": SimpleNamespace(name="m", pool=pool, parent=None)},
                            media_input=None)
    refresh_engine_gauges(state)  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    for name in ("kvbm_offload_blocks_d2h", "kvbm_offload_blocks_h2d", "kvbm_onboard_blocks_h2d",
                 "kvbm_onboard_blocks_d2d", "kvbm_matched_tokens", "kvbm_host_cache_hit_rate",
                 "kvbm_disk_cache_hit_rate"):
        assert f'{name}{{dp_rank="0",model="m",worker_id="1"}}' in text
    assert f'kvbm_onboard_blocks_h2d{{dp_rank="0",model="m",worker_id="1"}} {float(kvbm.onboard_blocks_h2d)}' in text


async def test_gpu_only_engine_reports_no_kvbm() -> None:
    eng = make_engine(num_gpu_blocks_override=12, block_size=4)
    await collect(eng, make_request("a", max_tokens=1))
    assert eng.load_metrics()[0].kvbm is None
