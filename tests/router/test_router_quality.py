"""Routing quality: in-flight prefixes keep a group together, ties keep a prefix where it is, lost reuse is counted."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from dynamo_mono.block_hash import block_hashes

from dynamo_mono.router.load import InstanceLoad
from dynamo_mono.router.selector import KvSelector

from tests.router.router_helpers import BS, cache, make_router, prompt


def _group_prompt(prefix: list[int], seed: int) -> tuple[list[int], int]:
    """prefix blocks + one unique block (hashes chained over the whole prompt)."""
    toks, _ = prompt(seed, 1)
    full = prefix + toks
    return block_hashes(full, BS), len(full)


def test_request_arriving_while_its_prefix_is_prefilled_joins_that_instance() -> None:
    """r1 (8-block prefix + 1 block) is still prefilling on A, no KV event yet. r2 of the same group:
    A's queue is r1's 9 blocks, but 8 of them are r2's own prefix, which r2 would compute anywhere.
    A = 1*(36 - 32 + 36 - 32)/4 + 9 + 1 = 12 < B = 9 + 0 + 9 = 18. Counting the prefix as queue too
    (A = 20) sent r2 away, and every request of a burst prefilled the prefix again."""
    prefix, _ = prompt(1, 8)
    for seed in range(10):  # whichever instance r1 lands on
        router = make_router(2, seed=seed, router_kv_overlap_score_weight=1.0)
        h1, n1 = _group_prompt(prefix, 100)
        first = router.select("r1", h1, n1).key
        h2, n2 = _group_prompt(prefix, 101)
        sel = router.select("r2", h2, n2)
        assert (sel.key, sel.overlap_blocks) == (first, 8)


def test_in_flight_credit_does_not_discount_cached_blocks_or_more_than_the_queue() -> None:
    sel = KvSelector(BS, overlap_weight=1.0)
    a, b = InstanceLoad(None, None), InstanceLoad(None, None)
    a.prefill_tokens, a.decode_blocks = 8, 0  # less queued than the in-flight match covers
    keys = [(0, 0), (1, 0)]
    base = sel.costs(keys, [a, b], {(0, 0): 4}, 5 * BS)
    with_inflight = sel.costs(keys, [a, b], {(0, 0): 4}, 5 * BS, inflight={(0, 0): 4})
    assert base[0] - with_inflight[0] == 8 / BS  # capped at the queued prefill tokens
    assert base[1] == with_inflight[1]


def test_tied_costs_keep_the_prefix_where_it_is() -> None:
    """A: 2 cached blocks (credit 2 x 2) but 4 more active blocks; B: idle. Equal cost: A wins every time."""
    a, b = InstanceLoad(None, None), InstanceLoad(None, None)
    a.decode_blocks = 4
    keys = [(0, 0), (1, 0)]
    for seed in range(20):
        sel = KvSelector(BS, overlap_weight=1.0, rng=random.Random(seed))
        costs = sel.costs(keys, [a, b], {(0, 0): 2}, 4 * BS)
        assert costs[0] == costs[1]
        assert sel.pick(keys, [a, b], {(0, 0): 2}, 4 * BS) == (0, 0)


def test_decisions_passing_over_a_longer_overlap_are_counted() -> None:
    registry = CollectorRegistry()
    router = make_router(2, registry=registry, router_kv_overlap_score_weight=0.0)
    _, hashes = prompt(7, 4)
    _, other = prompt(8, 40)
    cache(router, (0, 0), hashes)
    router.select("load", other, 40 * BS, pinned=(0, 0))
    assert router.select("r", hashes, 4 * BS).key == (1, 0)  # weight 0: held blocks decide
    text = generate_latest(registry).decode()
    assert 'dynamo_component_router_overlap_lost_decisions_total{model="m"} 1.0' in text
    assert 'dynamo_component_router_overlap_lost_blocks_total{model="m"} 4.0' in text
