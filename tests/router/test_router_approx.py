"""Approximate KV mode (no engine events): routing decisions predict cache hits until the TTL expires."""

from __future__ import annotations

from tests.router.router_helpers import BS, FakeClock, cache, make_router, prompt

from dynamo_mono.router.approx import ApproxIndexer


def test_prediction_after_routing_then_forgotten_after_ttl() -> None:
    clock = FakeClock()
    router = make_router(3, clock=clock, router_kv_events=False, router_ttl_secs=120.0)
    _, hashes = prompt(1, 8)
    first = router.select("a", hashes, 8 * BS)
    assert first.overlap_blocks == 0
    router.on_finish("a")
    clock.now += 60
    again = router.select("b", hashes, 8 * BS)
    assert (again.key, again.overlap_blocks) == (first.key, 8)
    router.on_finish("b")  # "b" refreshed the prediction at t=60
    clock.now += 119
    assert router.find_matches(hashes) == {first.key: 8}
    clock.now += 2
    assert router.find_matches(hashes) == {}


def test_events_are_ignored_in_approximate_mode() -> None:
    router = make_router(2, router_kv_events=False)
    _, hashes = prompt(2, 4)
    cache(router, (1, 0), hashes)
    assert router.find_matches(hashes) == {}


def test_instance_without_events_is_predicted_beside_event_instances() -> None:
    router = make_router(1)
    router.add_instance((5, 0), kv_events=False)
    _, a = prompt(3, 4)
    _, b = prompt(4, 4)
    cache(router, (0, 0), a)
    router.select("x", b, 4 * BS, pinned=(5, 0))
    router.add_instance((5, 0), total_blocks=100)  # idempotent re-add keeps its predictions
    assert router.find_matches(a) == {(0, 0): 4}
    assert router.find_matches(b) == {(5, 0): 4}
    router.remove_instance((5, 0))
    assert router.find_matches(b) == {}


def test_size_bound_prunes_oldest_first() -> None:
    clock = FakeClock()
    ix = ApproxIndexer(ttl_secs=1000, max_size=10, prune_ratio=0.5, clock=clock)
    ix.add_instance((0, 0))
    prompts = [prompt(10 + i, 4)[1] for i in range(3)]
    for p in prompts:
        clock.now += 1
        ix.record((0, 0), p)
    # 12 entries > 10: pruned to 5, the oldest prompts go first
    assert ix.size() == 5
    assert ix.find_matches(prompts[0]) == {}
    assert ix.find_matches(prompts[2]) == {(0, 0): 4}
    assert ix.find_matches(prompts[1]) == {}  # only its newest block survived, not its first


def test_leaving_instance_drops_its_predictions() -> None:
    ix = ApproxIndexer(ttl_secs=100, max_size=100, prune_ratio=0.8, clock=FakeClock())
    _, p = prompt(20, 4)
    for key in ((0, 0), (1, 0)):
        ix.add_instance(key)
        ix.record(key, p)
    assert ix.remove_instance((0, 0)) and not ix.remove_instance((0, 0))
    assert ix.size() == 4 and ix.find_matches(p) == {(1, 0): 4}
