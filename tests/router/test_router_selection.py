"""Router selection: overlap vs load, temperature, busy thresholds, pins, modes, queueing."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from dynamo_mono.kv_events import BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.router import NoInstance

from tests.router.router_helpers import BS, cache, make_router, prompt


def test_overlap_wins_when_load_is_equal() -> None:
    router = make_router(3)
    _, hashes = prompt(1, 16)
    cache(router, (1, 0), hashes[:10])
    cache(router, (2, 0), hashes[:4])
    sel = router.select("r1", hashes, 16 * BS)
    assert (sel.key, sel.overlap_blocks, sel.prompt_blocks) == ((1, 0), 10, 16)


def test_load_wins_when_overlap_is_equal() -> None:
    router = make_router(2)
    _, hashes = prompt(2, 8)
    cache(router, (0, 0), hashes)
    cache(router, (1, 0), hashes)
    _, other = prompt(3, 8)
    router.select("busy", other, 8 * BS, pinned=(0, 0))  # (0, 0) now holds 8 active blocks
    for i in range(20):  # not a lucky tie-break
        assert router.select(f"r{i}", hashes, 8 * BS).key == (1, 0)
        router.on_finish(f"r{i}")


def test_large_overlap_beats_small_load_and_weight_zero_ignores_prefill_savings() -> None:
    """(0,0) holds the 16-block prompt and decodes 20 blocks for another request; (1,0) is idle.
    weight 1: 0*1 + 20 + 0 = 20 < 16*1 + 0 + 16 = 32 -> (0,0). weight 0: only held blocks count,
    20 + 0 > 0 + 16 -> (1,0)."""
    _, hashes = prompt(4, 16)
    _, other = prompt(5, 20)
    for weight, expected in ((1.0, (0, 0)), (0.0, (1, 0))):
        router = make_router(2, router_kv_overlap_score_weight=weight)
        cache(router, (0, 0), hashes)
        router.select("load", other, 20 * BS, pinned=(0, 0))
        router.on_first_token("load")
        assert router.select("r", hashes, 16 * BS).key == expected


def test_ties_are_broken_at_random() -> None:
    router = make_router(4, seed=1)
    _, hashes = prompt(6, 4)
    seen = Counter()
    for i in range(200):
        seen[router.select(f"r{i}", hashes, 4 * BS).key] += 1
        router.on_finish(f"r{i}")
    assert set(seen) == {(w, 0) for w in range(4)} and min(seen.values()) > 20


def test_temperature_samples_softmax_of_normalised_cost() -> None:
    router = make_router(2, seed=2, router_temperature=1.0)
    _, hashes = prompt(7, 8)
    cache(router, (0, 0), hashes)  # (0,0) cost 0 blocks to prefill, (1,0) 8: normalised 0 vs 1
    seen = Counter()
    for i in range(3000):
        seen[router.select(f"r{i}", hashes, 8 * BS).key] += 1
        router.on_finish(f"r{i}")
    expected = 1 / (1 + math.exp(-1.0))  # ~0.731
    assert abs(seen[(0, 0)] / 3000 - expected) < 0.04
    cold = make_router(2, seed=2, router_temperature=0.05)
    cache(cold, (0, 0), hashes)
    picks = Counter()
    for i in range(500):
        picks[cold.select(f"r{i}", hashes, 8 * BS).key] += 1
        cold.on_finish(f"r{i}")
    assert picks[(0, 0)] >= 498


def test_busy_instances_are_skipped_and_none_when_all_busy() -> None:
    router = make_router(2, active_prefill_tokens_threshold=10)
    _, big = prompt(8, 4)  # 16 tokens > threshold
    router.select("a", big, 16, pinned=(0, 0))  # pins ignore busy thresholds
    assert router.is_busy((0, 0))
    assert router.select("b", big, 16).key == (1, 0)
    assert router.select("c", big, 16) is None
    router.on_first_token("a")  # prefill done: (0, 0) has capacity again
    assert router.select("c", big, 16).key == (0, 0)


def test_decode_blocks_threshold_uses_total_blocks() -> None:
    router = make_router(0, active_decode_blocks_threshold=0.5)
    router.add_instance((0, 0), total_blocks=10)
    router.add_instance((1, 0))  # unknown capacity: never busy by blocks
    _, hashes = prompt(9, 6)
    _, more = prompt(10, 12)
    router.select("a", hashes, 6 * BS, pinned=(0, 0))  # 6 of 10 blocks: over the 0.5 threshold
    router.select("b", more, 12 * BS, pinned=(1, 0))  # heavier, but not busy
    assert router.load()[(0, 0)]["active_decode_blocks"] == 6
    assert router.is_busy((0, 0)) and not router.is_busy((1, 0))
    assert [router.select(f"r{i}", [], 1).key for i in range(3)] == [(1, 0)] * 3
    router.on_finish("a")
    assert router.select("r9", [], 1).key == (0, 0)


async def test_wait_for_capacity_resolves_when_a_request_finishes() -> None:
    router = make_router(1, active_prefill_tokens_threshold=0)
    router.select("a", [], 8)
    assert router.select("b", [], 8) is None
    waiter = router.wait_for_capacity()
    asyncio.get_running_loop().call_later(0.01, router.on_finish, "a")
    await asyncio.wait_for(waiter, 2)
    assert router.select("b", [], 8).key == (0, 0)


def test_pin_to_unknown_instance_and_no_instances_raise() -> None:
    router = make_router(2)
    with pytest.raises(NoInstance, match="worker_id=7"):
        router.select("r", [], 4, pinned=(7, 0))
    with pytest.raises(NoInstance):
        router.select("r", [], 4, pinned=(0, 0), allowed=[(1, 0)])
    with pytest.raises(NoInstance):
        router.select("r", [], 4, allowed=[(5, 0)])
    with pytest.raises(NoInstance):
        make_router(0).select("r", [], 4)


@pytest.mark.parametrize("mode", ["kv", "round-robin", "random", "direct"])
def test_pin_works_in_every_mode(mode: str) -> None:
    router = make_router(3, router_mode=mode)
    assert all(router.select(f"r{i}", [], 4, pinned=(2, 0)).key == (2, 0) for i in range(5))


def test_direct_mode_requires_a_pin() -> None:
    router = make_router(2, router_mode="direct")
    with pytest.raises(NoInstance, match="direct"):
        router.select("r", [], 4)


def test_round_robin_cycles_and_respects_allowed() -> None:
    router = make_router(3, router_mode="round-robin")
    keys = [router.select(f"r{i}", [], 4).key for i in range(6)]
    assert keys == [(0, 0), (1, 0), (2, 0)] * 2
    allowed = {(0, 0), (2, 0)}
    got = {router.select(f"s{i}", [], 4, allowed=allowed).key for i in range(6)}
    assert got == allowed


def test_random_mode_spreads_over_instances() -> None:
    router = make_router(3, router_mode="random", seed=4)
    seen = Counter(router.select(f"r{i}", [], 4).key for i in range(300))
    assert len(seen) == 3 and min(seen.values()) > 60


def test_remove_instance_forgets_index_load_and_requests() -> None:
    router = make_router(2)
    _, hashes = prompt(10, 4)
    cache(router, (0, 0), hashes)
    router.select("a", hashes, 16, pinned=(0, 0))
    router.remove_instance((0, 0))
    router.remove_instance((0, 0))
    router.on_finish("a")  # request of a removed instance: no error, no effect
    assert router.instances() == [(1, 0)]
    assert router.find_matches(hashes) == {}
    router.add_instance((0, 0))  # rejoining starts clean
    assert router.load()[(0, 0)]["active_requests"] == 0
    assert router.select("b", hashes, 16).overlap_blocks == 0


def test_events_for_unknown_instances_are_dropped() -> None:
    router = make_router(1)
    _, hashes = prompt(11, 4)
    cache(router, (9, 0), hashes)
    assert router.find_matches(hashes) == {}


def test_event_id_gap_requests_a_resync_once_and_stale_events_are_dropped() -> None:
    router = make_router(2)
    asked = []
    router.on_resync = asked.append
    _, a = prompt(12, 4)
    _, b = prompt(13, 4)
    cache(router, (0, 0), a[:2], event_id=1)
    cache(router, (0, 0), a[2:], event_id=5)  # ids 2..4 lost
    cache(router, (0, 0), b, event_id=9)
    assert asked == [(0, 0)] and router.resync_needed == {(0, 0)}
    cache(router, (0, 0), b, event_id=3)  # stale: ignored
    snapshot = [KvEventBatch(0, 0, 9, [BlockStored(b, None)])]
    router.resync_instance((0, 0), snapshot)
    assert router.resync_needed == set()
    assert router.find_matches(b) == {(0, 0): 4} and router.find_matches(a) == {}
    cache(router, (1, 0), a)  # the other instance is unaffected
    assert router.find_matches(a) == {(1, 0): 4}


def test_engine_with_its_own_hashes_is_matched_through_token_ids() -> None:
    router = make_router(1)
    toks, hashes = prompt(14, 6)
    theirs = [h ^ 0xABCDEF for h in hashes]  # e.g. vLLM's hash function
    ev1 = BlockStored(theirs[:3], None, toks[: 3 * BS])
    ev2 = BlockStored(theirs[3:], theirs[2], toks[3 * BS:])
    router.on_kv_events(KvEventBatch(0, 0, 1, [ev1]))
    router.on_kv_events(KvEventBatch(0, 0, 2, [ev2]))
    assert router.find_matches(hashes) == {(0, 0): 6}
    router.on_kv_events(KvEventBatch(0, 0, 3, [BlockRemoved([theirs[4]])]))
    assert router.find_matches(hashes) == {(0, 0): 4}


def test_non_kv_modes_report_no_overlap() -> None:
    router = make_router(2, router_mode="round-robin")
    _, hashes = prompt(15, 4)
    cache(router, (0, 0), hashes)
    sel = router.select("r", hashes, 16)
    assert sel.overlap_blocks == 0 and sel.prompt_blocks == 4
