"""Property tests: the KV indexer agrees with a brute-force model under any event interleaving and churn."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dynamo_mono.block_hash import block_hashes
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.router.indexer import KvIndexer

BS = 4
CHAIN_BLOCKS = 8
FOREIGN = 0x5A5A_1234_DEAD_BEEF  # engines 2 and 3 publish hashes of their own (ours xor this)
INSTANCES = [(0, 0), (1, 0), (1, 1), (2, 0)]


def _chains() -> list[tuple[list[int], list[int]]]:
    rng = random.Random(7)
    base = [rng.randrange(5000) for _ in range(CHAIN_BLOCKS * BS)]
    out = []
    for share in (8, 5, 2, 0):  # chains sharing 8 / 5 / 2 / 0 leading blocks with chain 0
        toks = base[: share * BS] + [rng.randrange(5000) for _ in range((CHAIN_BLOCKS - share) * BS)]
        out.append((toks, block_hashes(toks, BS)))
    return out


CHAINS = _chains()


def foreign(key: tuple[int, int]) -> bool:
    return key in ((1, 1), (2, 0))


def ext(key: tuple[int, int], h: int) -> int:
    return h ^ FOREIGN if foreign(key) else h


def stored_event(key, chain: int, start: int, length: int, with_tokens: bool) -> BlockStored:
    toks, hashes = CHAINS[chain]
    blocks = hashes[start:start + length]
    parent = hashes[start - 1] if start else None
    tokens = toks[start * BS:(start + length) * BS] if (with_tokens or foreign(key)) else []
    return BlockStored([ext(key, h) for h in blocks], None if parent is None else ext(key, parent), tokens)


def reference_matches(model: dict, prompt: list[int]) -> dict:
    out = {}
    for key, held in model.items():
        n = 0
        for h in prompt:
            if h not in held:
                break
            n += 1
        if n:
            out[key] = n
    return out


class IndexerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ix = KvIndexer(BS)
        self.model: dict[tuple[int, int], set[int]] = {}
        self.event_id = {k: 0 for k in INSTANCES}

    def _send(self, key, events) -> None:
        self.event_id[key] += 1
        self.ix.apply(KvEventBatch(key[0], key[1], self.event_id[key], events))

    def _apply_store_to_model(self, key, chain, start, length) -> None:
        held = self.model[key]
        hashes = CHAINS[chain][1]
        # engines with their own hashes are re-hashed from the parent: an unknown parent drops the event
        if foreign(key) and start and hashes[start - 1] not in held:
            return
        held.update(hashes[start:start + length])

    @rule(key=st.sampled_from(INSTANCES),
          snap=st.lists(st.tuples(st.integers(0, 3), st.integers(1, CHAIN_BLOCKS)), max_size=3),
          with_snapshot=st.booleans())
    def join(self, key, snap, with_snapshot) -> None:
        batches = []
        if with_snapshot:
            for chain, length in snap:
                self.event_id[key] += 1
                batches.append(KvEventBatch(key[0], key[1], self.event_id[key],
                                            [stored_event(key, chain, 0, length, True)]))
        if key not in self.model or with_snapshot:
            self.model[key] = set()
        self.ix.add_instance(key, batches if with_snapshot else None)
        for chain, length in (snap if with_snapshot else []):
            self._apply_store_to_model(key, chain, 0, length)

    @rule(key=st.sampled_from(INSTANCES))
    def leave(self, key) -> None:
        assert self.ix.remove_instance(key) == (key in self.model)
        self.model.pop(key, None)
        assert not self.ix.remove_instance(key)  # second purge is a no-op

    @rule(key=st.sampled_from(INSTANCES), chain=st.integers(0, 3), start=st.integers(0, CHAIN_BLOCKS - 1),
          length=st.integers(1, CHAIN_BLOCKS), with_tokens=st.booleans())
    def store(self, key, chain, start, length, with_tokens) -> None:
        length = min(length, CHAIN_BLOCKS - start)
        self._send(key, [stored_event(key, chain, start, length, with_tokens)])
        if key in self.model:
            self._apply_store_to_model(key, chain, start, length)

    @rule(key=st.sampled_from(INSTANCES), chain=st.integers(0, 3),
          idx=st.lists(st.integers(0, CHAIN_BLOCKS - 1), min_size=1, max_size=4))
    def remove(self, key, chain, idx) -> None:
        hashes = [CHAINS[chain][1][i] for i in idx]
        self._send(key, [BlockRemoved([ext(key, h) for h in hashes])])
        if key in self.model:
            self.model[key].difference_update(hashes)

    @rule(key=st.sampled_from(INSTANCES))
    def clear(self, key) -> None:
        self._send(key, [AllBlocksCleared()])
        if key in self.model:
            self.model[key].clear()

    @rule(key=st.sampled_from(INSTANCES), a=st.integers(0, 3), b=st.integers(0, 3))
    def store_then_remove_in_one_batch(self, key, a, b) -> None:
        self._send(key, [stored_event(key, a, 0, 4, True), BlockRemoved([ext(key, CHAINS[b][1][2])])])
        if key in self.model:
            self._apply_store_to_model(key, a, 0, 4)
            self.model[key].discard(CHAINS[b][1][2])

    @rule(chain=st.integers(0, 3), length=st.integers(0, CHAIN_BLOCKS), tail=st.booleans())
    def query(self, chain, length, tail) -> None:
        prompt = CHAINS[chain][1][:length] + ([123456789] if tail else [])
        assert self.ix.find_matches(prompt) == reference_matches(self.model, prompt)

    @invariant()
    def every_chain_matches_the_reference(self) -> None:
        for _toks, hashes in CHAINS:
            assert self.ix.find_matches(hashes) == reference_matches(self.model, hashes)

    @invariant()
    def tree_holds_exactly_the_union(self) -> None:
        union = set().union(*self.model.values()) if self.model else set()
        assert set(self.ix.core.nodes) == union
        assert sorted(self.ix.instances()) == sorted(self.model)

    @precondition(lambda self: not self.model)
    @invariant()
    def empty_when_all_left(self) -> None:
        assert self.ix.size() == 0


TestIndexerMachine = IndexerMachine.TestCase
TestIndexerMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])


def test_rapid_churn_leaves_no_stale_entries() -> None:
    rng = random.Random(3)
    ix = KvIndexer(BS)
    live: dict[tuple[int, int], set[int]] = {}
    for step in range(400):
        key = (rng.randrange(6), rng.randrange(2))
        if key in live and rng.random() < 0.5:
            ix.remove_instance(key)
            ix.remove_instance(key)
            del live[key]
        else:
            chain = rng.randrange(4)
            n = rng.randint(1, CHAIN_BLOCKS)
            snap = [KvEventBatch(key[0], key[1], step + 1, [BlockStored(CHAINS[chain][1][:n], None)])]
            ix.add_instance(key, snap)
            live[key] = set(CHAINS[chain][1][:n])  # a snapshot replaces what was indexed
        assert set(ix.core.nodes) == (set().union(*live.values()) if live else set())
    for key in list(live):
        ix.remove_instance(key)
    assert ix.size() == 0 and not ix.core.slot_of
    assert all(h is None for h in ix.core.holds)
