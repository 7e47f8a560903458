"""Block manager: ref counts, prefix hits, tail-first LRU eviction and KV events that mirror the cache."""

from __future__ import annotations

import json
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_mono.block_hash import block_hashes
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored
from mocker.kv_manager import KvManager

BS = 2


class Harness:
    """Drives a KvManager like the scheduler does, and keeps an independent model of the free queue."""

    def __init__(self, num_blocks: int) -> None:
        self.kv = KvManager(num_blocks, BS)
        self.seqs: list[tuple[list[int], list[int]]] = []  # (tokens, blocks)
        self.model_free = list(range(num_blocks))  # expected free-queue order
        self.replayed: set[int] = set()
        self.hits_seen = 0

    def _replay(self) -> None:
        for ev in self.kv.take_events():
            if isinstance(ev, BlockStored):
                for h in ev.block_hashes:
                    assert h not in self.replayed, "BlockStored for a hash already cached"
                    self.replayed.add(h)
                assert len(ev.token_ids) == BS * len(ev.block_hashes)
                assert ev.block_size == BS
            elif isinstance(ev, BlockRemoved):
                for h in ev.block_hashes:
                    assert h in self.replayed, "BlockRemoved for a hash never stored"
                    self.replayed.discard(h)
            elif isinstance(ev, AllBlocksCleared):
                self.replayed.clear()

    def _model_alloc(self, blocks_before: int, blocks: list[int], hits: list[int]) -> None:
        for b in hits:
            if b in self.model_free:
                self.model_free.remove(b)
        for b in blocks[blocks_before + len(hits):]:
            assert self.model_free[0] == b, "allocation must take the LRU head"
            self.model_free.pop(0)

    def start(self, tokens: list[int]) -> None:
        kv = self.kv
        hashes = block_hashes(tokens, BS)
        hits = kv.match_prefix(hashes, (len(tokens) - 1) // BS)
        # the hit is exactly the longest prefix of hashes present in the replayed cache
        expect = 0
        while expect < (len(tokens) - 1) // BS and hashes[expect] in self.replayed:
            expect += 1
        assert len(hits) == expect
        blocks: list[int] = []
        need = -(-len(tokens) // BS) - len(hits)
        if kv.allocate(blocks, need, hits):
            self._model_alloc(0, blocks, hits)
            kv.commit(blocks, hashes, tokens, len(hits), len(tokens) // BS)
            self.seqs.append((tokens, blocks))
            self.hits_seen += len(hits)
        else:
            assert blocks == []

    def append(self, i: int, tok: int) -> None:
        tokens, blocks = self.seqs[i % len(self.seqs)]
        tokens.append(tok)
        if len(tokens) > len(blocks) * BS:
            before = len(blocks)
            if not self.kv.allocate(blocks, 1):
                tokens.pop()
                return
            self._model_alloc(before, blocks, [])
        full = len(tokens) // BS
        done = (len(tokens) - 1) // BS
        if full > done:
            self.kv.commit(blocks, block_hashes(tokens, BS), tokens, done, full)

    def free(self, i: int) -> None:
        tokens, blocks = self.seqs.pop(i % len(self.seqs))
        # vLLM >= 0.11: released cached blocks go to the tail (LRU), uncached ones to the head (reused first).
        released = [b for b in reversed(blocks) if self.kv.ref[b] == 1]
        self.model_free[:0] = [b for b in released if self.kv.blk_hash[b] is None]
        self.model_free.extend(b for b in released if self.kv.blk_hash[b] is not None)
        self.kv.free_blocks(blocks)

    def check(self) -> None:
        kv = self.kv
        self._replay()
        assert all(r >= 0 for r in kv.ref)
        in_use: dict[int, int] = {}
        for _, blocks in self.seqs:
            for b in blocks:
                in_use[b] = in_use.get(b, 0) + 1
        for b in range(kv.num_blocks):
            assert kv.ref[b] == in_use.get(b, 0)
            assert (b in kv.free) == (kv.ref[b] == 0), "a block is both free and in use (or neither)"
        assert list(kv.free) == self.model_free, "free queue order differs from tail-first LRU model"
        assert set(kv.cached) == self.replayed, "events do not mirror the cache"
        for h, b in kv.cached.items():
            assert kv.blk_hash[b] == h
        assert kv.cached_free == sum(1 for b in kv.cached.values() if kv.ref[b] == 0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.lists(st.integers(0, 2), min_size=1, max_size=9)),
        st.tuples(st.just("append"), st.tuples(st.integers(0, 50), st.integers(0, 2))),
        st.tuples(st.just("free"), st.integers(0, 50)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_blocks=st.integers(1, 12), ops=ops)
def test_random_operations_keep_invariants(num_blocks: int, ops: list) -> None:
    h = Harness(num_blocks)
    for op, arg in ops:
        if op == "start":
            h.start(list(arg))
        elif op == "append" and h.seqs:
            h.append(*arg)
        elif op == "free" and h.seqs:
            h.free(arg)
        h.check()
    while h.seqs:
        h.free(0)
        h.check()
    assert h.kv.active_blocks == 0


def test_freed_sequence_suffix_is_evicted_before_its_prefix() -> None:
    kv = KvManager(4, BS)
    tokens = [1, 2, 3, 4, 5, 6]
    hashes = block_hashes(tokens, BS)
    blocks: list[int] = []
    assert kv.allocate(blocks, 3)
    kv.commit(blocks, hashes, tokens, 0, 3)
    kv.free_blocks(list(blocks))
    # free queue: the never-used block first, then the last block, then middle, then the first block
    assert list(kv.free) == [3, blocks[2], blocks[1], blocks[0]]
    kv.take_events()
    other: list[int] = []
    assert kv.allocate(other, 2)  # takes block 3 and then evicts the suffix block
    removed = [h for ev in kv.take_events() if isinstance(ev, BlockRemoved) for h in ev.block_hashes]
    assert removed == [hashes[2]]
    assert kv.match_prefix(hashes, 3) == [blocks[0], blocks[1]]


def test_hit_on_a_free_cached_block_takes_it_out_of_the_free_queue() -> None:
    kv = KvManager(3, BS)
    tokens = [7, 8, 9, 10]
    hashes = block_hashes(tokens, BS)
    a: list[int] = []
    kv.allocate(a, 2)
    kv.commit(a, hashes, tokens, 0, 2)
    kv.free_blocks(list(a))
    hit = kv.match_prefix(hashes, 1)
    b: list[int] = []
    assert kv.allocate(b, 1, hit)
    assert hit[0] not in kv.free and kv.ref[hit[0]] == 1
    # the hit block is active again, so only 1 block can still be handed out
    assert not kv.allocate([], 2)
    assert kv.usage() == 2 / 3


def test_duplicate_content_is_not_stored_twice() -> None:
    kv = KvManager(4, BS)
    tokens = [1, 1]
    hashes = block_hashes(tokens, BS)
    a: list[int] = []
    b: list[int] = []
    kv.allocate(a, 1)
    kv.allocate(b, 1)
    kv.commit(a, hashes, tokens, 0, 1)
    kv.commit(b, hashes, tokens, 0, 1)
    stored = [ev for ev in kv.take_events() if isinstance(ev, BlockStored)]
    assert len(stored) == 1 and stored[0].parent_block_hash is None and stored[0].token_ids == tokens


def test_snapshot_lists_parents_before_children() -> None:
    kv = KvManager(8, BS)
    tokens = list(range(10))
    hashes = block_hashes(tokens, BS)
    blocks: list[int] = []
    kv.allocate(blocks, 5)
    kv.commit(blocks, hashes, tokens, 0, 5)
    snap = kv.snapshot()
    assert [ev.block_hashes[0] for ev in snap] == hashes
    assert [ev.parent_block_hash for ev in snap] == [None] + hashes[:-1]


def test_trace_env_logs_json_records(monkeypatch, caplog) -> None:
    monkeypatch.setenv("DYN_MOCKER_KV_CACHE_TRACE", "1")
    kv = KvManager(2, BS, dp_rank=3)
    tokens = [1, 2]
    with caplog.at_level(logging.INFO, logger="dynamo_mono.mocker.kv_trace"):
        a: list[int] = []
        kv.allocate(a, 1)
        kv.commit(a, block_hashes(tokens, BS), tokens, 0, 1)
        kv.free_blocks(a)
        kv.allocate([], 2)  # evicts the cached block
    recs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dynamo_mono.mocker.kv_trace"]
    events = [r["event"] for r in recs]
    assert "allocate" in events and "evict" in events
    first = recs[0]
    assert set(first) >= {"event", "timestamp_ms", "block_ids", "block_size", "free_blocks_after", "active_blocks",
                          "inactive_blocks", "total_blocks", "dp_rank"}
    assert first["dp_rank"] == 3 and first["total_blocks"] == 2


def test_trace_is_off_by_default(monkeypatch, caplog) -> None:
    monkeypatch.delenv("DYN_MOCKER_KV_CACHE_TRACE", raising=False)
    kv = KvManager(2, BS)
    with caplog.at_level(logging.INFO, logger="dynamo_mono.mocker.kv_trace"):
        kv.allocate([], 2)
    assert not [r for r in caplog.records if r.name == "dynamo_mono.mocker.kv_trace"]
