"""KV offload tiers: disk filter, LRU, onboarding cost, preemption, and event/index consistency (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_mono.engine import EngineRequest, SamplingParams, StopConditions
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.router.indexer import KvIndexer
from mocker.kv_manager import KvManager
from mocker.kv_tiers import BlockMeta, TierConfig, TierStore
from mocker.outputs import TokenSource
from mocker.perf_model import PerfModel
from mocker.scheduler import Scheduler
from mocker.sequence import Sequence

ALLOWED = np.arange(0, 200, dtype=np.int64)
BS = 4


def make_seq(rid: str, tokens: list[int], max_tokens: int = 1, arrival: int = 0) -> Sequence:
    req = EngineRequest(rid, list(tokens), SamplingParams(), StopConditions(max_tokens=max_tokens, ignore_eos=True))
    return Sequence(req, TokenSource(ALLOWED, 1, None, None), block_size=BS, prefix_caching=True, arrival=arrival)


def run(sched: Scheduler, seqs: list[Sequence], tick_ms: float = 1000.0) -> list:
    for s in seqs:
        sched.add(s)
    plans = []
    for _ in range(10_000):
        if not sched.has_work():
            break
        plan, failed = sched.schedule()
        assert not failed
        plans.append(plan)
        sched.complete(plan)
        if sched.kv.tiers is not None:
            sched.kv.tiers.tick(tick_ms)
    assert not sched.has_work()
    return plans


def _store(events: list) -> TierStore:
    return TierStore(TierConfig(host_blocks=4, disk_blocks=4), BS, events.append)


def meta() -> BlockMeta:
    return BlockMeta(None, [1, 2, 3, 4], None, None)


# --- disk filter -----------------------------------------------------------------------------------
def test_disk_filter_needs_frequency_two() -> None:
    ev: list = []
    ts = _store(ev)
    ts.register(7, meta())
    ts.tick(10.0)
    assert 7 in ts.host.blocks and not ts.disk.blocks and not ts.disk.queue  # freq 1: stays on host
    ts.hit(7)  # freq 2 -> queued host -> disk
    assert ts.freq[7] == 2
    ts.tick(10.0)
    assert 7 in ts.disk.blocks
    assert ts.stats.offload_d2h == 1 and ts.stats.offload_h2d == 1
    assert [(type(e).__name__, e.tier) for e in ev] == [("BlockStored", "host"), ("BlockStored", "disk")]


def test_disk_filter_off_offloads_every_block() -> None:
    ts = TierStore(TierConfig(host_blocks=4, disk_blocks=4, disk_filter=False), BS, [].append)
    ts.register(7, meta())
    ts.tick(10.0)
    ts.tick(10.0)
    assert 7 in ts.host.blocks and 7 in ts.disk.blocks


def test_frequency_doubles_on_hit_and_decays_per_step() -> None:
    ts = _store([])
    ts.register(7, meta())
    ts.hit(7)
    ts.hit(7)
    assert ts.freq[7] == 4
    ts.tick(0.0)
    ts.tick(0.0)
    assert ts.freq[7] == 2
    ts.tick(0.0)
    ts.tick(0.0)
    assert 7 not in ts.freq  # decayed to 0: forgotten


def test_bandwidth_bounds_transfers_per_step() -> None:
    ts = TierStore(TierConfig(host_blocks=100, host_ms_per_block=1.0), BS, [].append)
    for h in range(10):
        ts.register(h, meta())
    ts.tick(2.5)
    assert len(ts.host.blocks) == 2  # 2.5 ms at 1 ms per block; the half block of credit carries over
    ts.tick(0.5)
    assert len(ts.host.blocks) == 3


def test_host_lru_evicts_least_recently_used_with_event() -> None:
    ev: list = []
    ts = TierStore(TierConfig(host_blocks=2), BS, ev.append)
    for h in (1, 2):
        ts.register(h, meta())
    ts.tick(10.0)
    ts.hit(1)  # 2 is now the LRU
    ts.register(3, meta())
    ts.tick(10.0)
    assert list(ts.host.blocks) == [1, 3]
    assert any(type(e) is BlockRemoved and e.block_hashes == [2] and e.tier == "host" for e in ev)


# --- onboarding --------------------------------------------------------------------------------------
def _evict_then_resend(tiers: TierConfig | None) -> tuple[Scheduler, list]:
    sched = Scheduler(KvManager(10, BS, tiers=tiers), max_num_seqs=4, watermark=0.0)
    a = list(range(100, 133))  # 8 full blocks + 1 token
    b = list(range(1, 34))
    run(sched, [make_seq("a1", a)])
    run(sched, [make_seq("b", b, arrival=1)])  # needs 9 of the 10 GPU blocks: evicts most of a's
    plans = run(sched, [make_seq("a2", a, arrival=2)])
    return sched, plans


def test_onboarding_from_host_skips_recompute_at_transfer_cost() -> None:
    cfg = TierConfig(host_blocks=64, host_ms_per_block=0.021)  # 4 tokens x 128 KiB at 25 GB/s
    sched, plans = _evict_then_resend(cfg)
    st_ = sched.kv.tiers.stats
    first = plans[0]
    gpu_hit_blocks = 8 - st_.onboard_h2d
    assert st_.onboard_h2d > 0
    assert first.prefill == [(1, 32, 1.0)]  # only the last token is computed
    assert abs(first.onboard_ms - st_.onboard_h2d * 0.021) < 1e-9
    assert st_.matched_tokens == st_.onboard_h2d * BS
    assert gpu_hit_blocks >= 0
    # cheaper than recomputing those blocks, dearer than a GPU hit (free)
    recompute = PerfModel().prefill_ms(st_.onboard_h2d * BS, gpu_hit_blocks * BS)
    assert 0 < first.onboard_ms < recompute


def test_without_tiers_the_evicted_prefix_is_recomputed() -> None:
    sched, plans = _evict_then_resend(None)
    computed = sum(n for p in plans for n, _c, _f in p.prefill)
    assert computed > 1 and all(p.onboard_ms == 0 for p in plans)


def test_disk_onboarding_costs_disk_bandwidth() -> None:
    cfg = TierConfig(disk_blocks=64, disk_ms_per_block=1.7)
    sched, plans = _evict_then_resend(cfg)
    st_ = sched.kv.tiers.stats
    assert st_.onboard_d2d > 0 and st_.onboard_h2d == 0 and st_.offload_d2d > 0
    assert abs(plans[0].onboard_ms - st_.onboard_d2d * 1.7) < 1e-9


# --- properties ----------------------------------------------------------------------------------------
def _replay(kv: KvManager, events: list) -> KvIndexer:
    idx = KvIndexer(BS)
    idx.add_instance((1, 0))
    idx.apply(KvEventBatch(1, 0, 1, events))
    return idx


def _check_event_accounting(events: list, resident: dict[str, set[int]]) -> None:
    """Per tier, each block is stored once before it is removed; what is left is exactly what is resident."""
    held: dict[str, set[int]] = {"gpu": set(), "host": set(), "disk": set()}
    for e in events:
        if type(e) is AllBlocksCleared:
            for s in held.values():
                s.clear()
        elif type(e) is BlockStored:
            for h in e.block_hashes:
                assert h not in held[e.tier], f"block {h} stored twice on {e.tier}"
                held[e.tier].add(h)
        else:
            for h in e.block_hashes:
                assert h in held[e.tier], f"block {h} removed from {e.tier} without being stored"
                held[e.tier].discard(h)
    assert held == resident


def _check_invariants(kv: KvManager) -> None:
    free = kv.free
    assert len(free) == sum(1 for r in kv.ref if r == 0)  # GPU free list: exactly the unreferenced blocks
    assert all(kv.ref[b] == 0 for b in free)
    assert len(kv.cached) <= kv.num_blocks
    ts = kv.tiers
    if ts is not None:
        for tier in (ts.host, ts.disk):
            if tier is not None:
                assert len(tier.blocks) <= tier.capacity
                assert len(tier.queue) <= tier.capacity


workload = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 28), st.integers(1, 5), st.floats(0.0, 5.0)),
    min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload, st.integers(0, 24), st.integers(0, 40), st.booleans(), st.integers(9, 20))
def test_tiers_properties(reqs, host_blocks, disk_blocks, disk_filter, gpu_blocks) -> None:
    cfg = TierConfig(host_blocks, disk_blocks, 1.0, 3.0, disk_filter)
    kv = KvManager(gpu_blocks, BS, tiers=cfg)
    sched = Scheduler(kv, max_num_seqs=4, max_num_batched_tokens=16, watermark=0.0)
    events: list = []
    prefixes = [[(p * 37 + i) % 200 for i in range(28)] for p in range(4)]
    for i, (p, extra, max_tok, tick) in enumerate(reqs):
        sched.add(make_seq(f"r{i}", prefixes[p][:12 + extra // 2] + [i % 200] * (extra % 5), max_tok, i))
        for _ in range(3):  # interleave arrivals with steps (preemption happens on the small pools)
            plan, failed = sched.schedule()
            assert not failed
            sched.complete(plan)
            if kv.tiers is not None:
                kv.tiers.tick(tick)
            events.extend(kv.take_events())
            _check_invariants(kv)
    while sched.has_work():
        plan, failed = sched.schedule()
        assert not failed
        sched.complete(plan)
        if kv.tiers is not None:
            kv.tiers.tick(1.0)
        events.extend(kv.take_events())
        _check_invariants(kv)
    resident = {"gpu": set(kv.cached), "host": set(), "disk": set()}
    if kv.tiers is not None:
        resident.update(kv.tiers.resident())
    _check_event_accounting(events, resident)
    assert _replay(kv, events).tier_held((1, 0)) == resident
    # the snapshot describes the same view
    snap = KvIndexer(BS)
    snap.add_instance((1, 0), [KvEventBatch(1, 0, 1, list(kv.snapshot()))])
    assert snap.tier_held((1, 0)) == resident


# --- options -------------------------------------------------------------------------------------------
def _opts(**kw) -> dict:
    from mocker.options import MOCKER_OPTIONS
    opts = {o.name: o.default for o in MOCKER_OPTIONS}
    opts.update(kw)
    return opts


def test_gb_sizes_and_bandwidth_become_blocks_and_ms() -> None:
    from mocker.kv_tiers import tier_config
    cfg = tier_config(_opts(block_size=64, kv_bytes_per_token=131072, kv_host_gb=1.0, kv_disk_blocks=10))
    assert cfg.host_blocks == 128  # 1 GiB / 8 MiB blocks
    assert cfg.disk_blocks == 10
    assert abs(cfg.host_ms_per_block - 64 * 131072 / 25e6) < 1e-12


def test_conflicting_or_unusable_tier_options_are_refused() -> None:
    import pytest
    from dynamo_mono.config import ConfigError
    from mocker.engine import validate_options
    with pytest.raises(ConfigError, match="both size"):
        validate_options(_opts(kv_host_blocks=4, kv_host_gb=1.0), 0)
    with pytest.raises(ConfigError, match="prefix caching"):
        validate_options(_opts(kv_disk_blocks=4, enable_prefix_caching=False), 0)
    validate_options(_opts(kv_host_blocks=4, kv_disk_gb=2.0), 0)


def test_preempted_sequences_onboard_what_they_lost_and_finish_with_the_same_tokens() -> None:
    def batch() -> list[Sequence]:
        return [make_seq(f"r{i}", [(i * 50 + j) % 200 for j in range(12)], 14, i) for i in range(4)]

    roomy = Scheduler(KvManager(1000, BS), max_num_seqs=8, watermark=0.0)
    ref = batch()
    run(roomy, ref)
    tight = Scheduler(KvManager(12, BS, tiers=TierConfig(host_blocks=100, host_ms_per_block=0.01)),
                      max_num_seqs=8, watermark=0.0)
    seqs = batch()
    run(tight, seqs, tick_ms=1.0)
    assert tight.preemptions > 0
    assert tight.kv.tiers.stats.onboard_h2d > 0  # a re-admitted victim copied its prompt blocks back
    assert {s.rid: s.tokens for s in seqs} == {s.rid: s.tokens for s in ref}
    assert tight.kv.active_blocks == 0
