"""Router index with offload tiers: tier-tagged events, weighted host / disk overlap, clearing."""

from __future__ import annotations

from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.router.indexer import KvIndexer

A, B = (1, 0), (2, 0)
H = [101, 102, 103, 104, 105, 106]  # chained hashes of one prompt (the mocker's own hash: no re-hashing)


def _index(host_weight: float = 0.5, disk_weight: float = 0.25) -> KvIndexer:
    idx = KvIndexer(4, host_weight=host_weight, disk_weight=disk_weight)
    idx.add_instance(A)
    idx.add_instance(B)
    # A: 2 blocks on GPU; B: 1 on GPU, the next 3 on host, then 2 on disk
    idx.apply(KvEventBatch(1, 0, 1, [BlockStored(H[:2], None)]))
    idx.apply(KvEventBatch(2, 0, 1, [BlockStored(H[:1], None), BlockStored(H[1:4], H[0], tier="host"),
                                     BlockStored(H[4:], H[3], tier="disk")]))
    return idx


def test_host_and_disk_blocks_extend_the_gpu_prefix_at_their_weights() -> None:
    m = _index().find_matches(H)
    assert m[A] == 2
    assert m[B] == 1 + 3 * 0.5 + 2 * 0.25  # avoids more recompute than A: scores higher


def test_zero_weights_are_tier_blind() -> None:
    m = _index(0.0, 0.0).find_matches(H)
    assert m == {A: 2, B: 1}


def test_tier_removal_and_clear() -> None:
    idx = _index()
    idx.apply(KvEventBatch(2, 0, 2, [BlockRemoved([H[2]], tier="host")]))
    assert idx.find_matches(H)[B] == 1 + 0.5  # the chain breaks at the dropped host block
    assert idx.tier_held(B)["host"] == {H[1], H[3]}
    idx.apply(KvEventBatch(2, 0, 3, [AllBlocksCleared()]))
    assert idx.tier_held(B) == {"gpu": set(), "host": set(), "disk": set()}
    assert B not in idx.find_matches(H)


def test_unknown_tier_is_dropped_not_indexed_as_gpu() -> None:
    idx = _index()
    idx.apply(KvEventBatch(1, 0, 2, [BlockStored([999], None, tier="object")]))
    assert idx.dropped_events == 1
    assert 999 not in idx.core.nodes


def test_removing_an_instance_purges_its_tiers() -> None:
    idx = _index()
    idx.remove_instance(B)
    assert not idx.tiers["host"].nodes and not idx.tiers["disk"].nodes


def test_router_prefers_the_instance_holding_the_prompt_on_host_unless_tier_blind() -> None:
    from tests.router.router_helpers import BS, make_router, prompt

    _, hashes = prompt(11, 8)
    _, other = prompt(12, 3)
    for weights, expected in (((0.5, 0.25), (1, 0)), ((0.0, 0.0), (0, 0))):
        router = make_router(2, router_kv_host_overlap_weight=weights[0], router_kv_disk_overlap_weight=weights[1])
        # (1, 0) offloaded the whole prompt to its host tier and decodes one short request; (0, 0) is idle
        router.on_kv_events(KvEventBatch(1, 0, 1, [BlockStored(list(hashes), None, tier="host")]))
        router.select("busy", other, 3 * BS, pinned=(1, 0))
        router.on_first_token("busy")
        assert router.select("r", hashes, 8 * BS).key == expected


def test_rehashing_engine_offload_events_map_through_its_gpu_hashes() -> None:
    """vLLM-style: the engine's own hashes, offload events without tokens, the host copy dropped after the GPU's."""
    from dynamo_mono.block_hash import block_hashes

    idx = KvIndexer(4, host_weight=0.5)
    idx.add_instance(A)
    toks = list(range(8))
    ours = block_hashes(toks, 4)
    ext = [9001, 9002]
    idx.apply(KvEventBatch(1, 0, 1, [BlockStored(ext, None, toks, 4)]))
    idx.apply(KvEventBatch(1, 0, 2, [BlockStored(ext, None, [], 0, tier="host")]))
    idx.apply(KvEventBatch(1, 0, 3, [BlockRemoved(ext)]))  # GPU eviction
    assert idx.tier_held(A) == {"gpu": set(), "host": set(ours), "disk": set()}
    assert idx.find_matches(ours) == {A: 1.0}
    idx.apply(KvEventBatch(1, 0, 4, [BlockRemoved([ext[1]], tier="host")]))
    assert idx.tier_held(A)["host"] == {ours[0]}
