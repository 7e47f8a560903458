"""Radix index of cached KV blocks per engine instance, fed by KV events, answering prefix-overlap queries.

Block hashes are chained (dynamo_mono.block_hash): a hash names its whole prefix, so the radix tree
is stored flat as `hash -> bitmask of instance slots`; a node's path is implied by its hash, and a
prompt is walked by looking up its chained hashes in order. Each instance also keeps the set of
hashes it holds, so leaving, clearing and eviction touch only that instance's entries.

Engines that hash with another function (vLLM, SGLang, TRT-LLM) are detected on their first
BlockStored carrying token ids: the router then re-hashes token ids with the shared chained hash and
maps the engine's hashes to ours for later removals. Engines using our hash (the mocker) are
indexed as-is, with no per-block hashing cost.

Offload tiers: events tagged tier "host" / "disk" (KVBM-style offload) go to one membership per tier. Overlap is
then the GPU prefix plus the blocks continuing it on host or disk, each weighted (host_weight, disk_weight < 1:
onboarding beats recompute but costs more than a GPU hit); with both weights 0 the index is tier-blind.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from dynamo_mono.block_hash import SEED, block_hash, block_hashes, lora_seed
from dynamo_mono.engine import InstanceKey
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch

log = logging.getLogger(__name__)


def _bits(mask: int) -> Iterable[int]:
    """Slot numbers of the set bits of mask, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class BlockMembership:
    """Which instance slots hold which chained block hashes; the shared core of both indexers."""

    __slots__ = ("nodes", "holds", "keys", "slot_of", "_keys_of")

    def __init__(self) -> None:
        self.nodes: dict[int, int] = {}  # block hash -> bitmask of slots holding it
        self.holds: list[set[int] | None] = []  # slot -> hashes held (None = free slot)
        self.keys: list[InstanceKey | None] = []  # slot -> instance key
        self.slot_of: dict[InstanceKey, int] = {}
        self._keys_of: dict[int, tuple[InstanceKey, ...]] = {}  # memo: slot mask -> instance keys

    def add(self, key: InstanceKey) -> int:
        """Slot of key, allocating the lowest free one (keeps masks small under churn)."""
        slot = self.slot_of.get(key)
        if slot is not None:
            return slot
        for slot, held in enumerate(self.holds):
            if held is None:
                break
        else:
            slot = len(self.holds)
            self.holds.append(None)
            self.keys.append(None)
        self.holds[slot] = set()
        self.keys[slot] = key
        self._keys_of.clear()
        self.slot_of[key] = slot
        return slot

    def drop(self, key: InstanceKey) -> bool:
        """Purge every entry of key and free its slot; False when key was not present."""
        slot = self.slot_of.pop(key, None)
        if slot is None:
            return False
        self.clear_slot(slot)
        self.holds[slot] = None
        self.keys[slot] = None
        self._keys_of.clear()
        return True

    def store(self, slot: int, hashes: list[int]) -> None:
        bit = 1 << slot
        nodes = self.nodes
        get = nodes.get
        for h in hashes:
            nodes[h] = get(h, 0) | bit
        self.holds[slot].update(hashes)  # type: ignore[union-attr]

    def remove(self, slot: int, hashes: Iterable[int]) -> None:
        keep = ~(1 << slot)
        nodes = self.nodes
        held = self.holds[slot]
        assert held is not None
        for h in hashes:
            if h in held:
                held.discard(h)
                m = nodes[h] & keep
                if m:
                    nodes[h] = m
                else:
                    del nodes[h]

    def clear_slot(self, slot: int) -> None:
        held = self.holds[slot]
        if not held:
            return
        keep = ~(1 << slot)
        nodes = self.nodes
        for h in held:
            m = nodes[h] & keep
            if m:
                nodes[h] = m
            else:
                del nodes[h]
        held.clear()

    def find_matches(self, hashes: list[int]) -> dict[InstanceKey, int]:
        """Leading blocks of hashes each instance holds; stops as soon as no instance holds the next."""
        if not hashes:
            return {}
        get = self.nodes.get
        mask = get(hashes[0], 0)
        if not mask:
            return {}
        keys_of = self._keys_of
        out: dict[InstanceKey, int] = {}
        depth = 1
        for h in hashes[1:]:
            m = mask & get(h, 0)
            if m != mask:
                gone = mask ^ m
                out.update(dict.fromkeys(keys_of.get(gone) or self._expand(gone), depth))
                if not m:
                    return out
                mask = m
            depth += 1
        out.update(dict.fromkeys(keys_of.get(mask) or self._expand(mask), depth))
        return out

    def _expand(self, mask: int) -> tuple[InstanceKey, ...]:
        """Instance keys of a slot mask, memoised (masks seen in practice are few)."""
        keys_of = self._keys_of
        if len(keys_of) > 4096:
            keys_of.clear()
        keys = self.keys
        found = keys_of[mask] = tuple(keys[s] for s in _bits(mask))  # type: ignore[misc]
        return found

    def size(self) -> int:
        """Distinct cached blocks (tree nodes)."""
        return len(self.nodes)

    def held(self, key: InstanceKey) -> set[int]:
        slot = self.slot_of.get(key)
        return set() if slot is None else set(self.holds[slot])  # type: ignore[arg-type]

    def held_counts(self) -> dict[InstanceKey, int]:
        """Blocks indexed per instance."""
        return {key: len(self.holds[slot] or ()) for key, slot in self.slot_of.items()}


class _InstanceState:
    """Per-instance event bookkeeping: last event id and how its engine's hashes map to ours."""

    __slots__ = ("slot", "last_event_id", "rehash", "ext2local", "tier_ext", "gap_logged", "drop_logged")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.last_event_id: int | None = None  # None = accept the next id as the baseline
        self.rehash: bool | None = None  # None = undecided, False = engine uses our hash
        self.ext2local: dict[int, int] = {}
        self.tier_ext: dict[str, dict[int, int]] = {}  # re-hashing engines: tier -> engine hash -> ours
        self.gap_logged = False
        self.drop_logged = False


class KvIndexer:
    """Event-fed index: apply KvEventBatches in order per instance, answer find_matches."""

    def __init__(self, block_size: int, on_gap: Callable[[InstanceKey], None] | None = None, *,
                 host_weight: float = 0.0, disk_weight: float = 0.0) -> None:
        self.block_size = block_size
        self.core = BlockMembership()
        self.tiers: dict[str, BlockMembership] = {"host": BlockMembership(), "disk": BlockMembership()}
        self.host_weight = host_weight
        self.disk_weight = disk_weight
        self._state: dict[InstanceKey, _InstanceState] = {}
        self.on_gap = on_gap  # called once per detected event-id gap (e.g. to trigger a resync)
        self.dropped_events = 0

    # --- instances ------------------------------------------------------------------------
    def add_instance(self, key: InstanceKey, snapshot: list[KvEventBatch] | None = None) -> None:
        """Start indexing key (idempotent); snapshot = BlockStored batches describing its cache now."""
        if key not in self._state:
            self._state[key] = _InstanceState(self.core.add(key))
            for t in self.tiers.values():
                t.add(key)
        if snapshot is not None:
            self.resync(key, snapshot)

    def remove_instance(self, key: InstanceKey) -> bool:
        """Purge key's entries exactly once; False when it was not indexed."""
        if self._state.pop(key, None) is None:
            return False
        self.core.drop(key)
        for t in self.tiers.values():
            t.drop(key)
        return True

    def resync(self, key: InstanceKey, snapshot: list[KvEventBatch]) -> None:
        """Replace key's entries by a snapshot; later events with ids up to the snapshot's are stale."""
        st = self._state.get(key)
        if st is None:
            return
        self.core.clear_slot(st.slot)
        self._clear_tiers(key)
        st.ext2local.clear()
        st.tier_ext.clear()
        for batch in snapshot:
            self._apply_events(st, batch.events)
        ids = [b.event_id for b in snapshot]
        st.last_event_id = max(ids) if ids and max(ids) > 0 else None
        st.gap_logged = False

    def instances(self) -> list[InstanceKey]:
        return list(self._state)

    # --- events ---------------------------------------------------------------------------
    def apply(self, batch: KvEventBatch) -> bool:
        """Apply one batch; False when dropped (unknown instance or stale/duplicate event id)."""
        key = (batch.worker_id, batch.dp_rank)
        st = self._state.get(key)
        if st is None:
            return False
        last = st.last_event_id
        eid = batch.event_id
        if last is not None:
            if eid <= last:
                self.dropped_events += 1
                if not st.drop_logged:
                    st.drop_logged = True
                    log.warning("KV events of instance %s: stale event id %d (last %d) dropped; "
                                "further ones are dropped silently", key, eid, last)
                return False
            if eid != last + 1:
                # Missed events: this instance's entries may be wrong (never another's). Apply what
                # we have and ask for a resync; the index only ever under- or over-predicts hits.
                if not st.gap_logged:
                    st.gap_logged = True
                    log.warning("KV events of instance %s: event id gap %d -> %d; requesting resync",
                                key, last, eid)
                if self.on_gap is not None:
                    self.on_gap(key)
        st.last_event_id = eid
        self._apply_events(st, batch.events)
        return True

    def _clear_tiers(self, key: InstanceKey) -> None:
        for t in self.tiers.values():
            slot = t.slot_of.get(key)
            if slot is not None:
                t.clear_slot(slot)

    def _apply_tier(self, st: _InstanceState, ev: BlockStored | BlockRemoved) -> None:
        """An offload-tier event: host / disk membership of this instance (engine hashes mapped when re-hashing)."""
        core = self.tiers.get(ev.tier)
        if core is None:
            self._drop(st, f"KV event for unknown tier {ev.tier!r}")
            return
        key = self.core.keys[st.slot]
        slot = core.slot_of[key]  # type: ignore[index]
        hashes = ev.block_hashes
        stored = type(ev) is BlockStored
        if st.rehash:
            # Offload events name blocks by the engine's hash (vLLM: no tokens); a block is offloaded while
            # still on the GPU, so its GPU mapping gives ours; kept per tier for its later removal.
            ext = st.tier_ext.setdefault(ev.tier, {})
            if stored:
                get = st.ext2local.get
                pairs = [(h, x) for h, x in ((h, get(h)) for h in hashes) if x is not None]
                ext.update(pairs)
                hashes = [x for _h, x in pairs]
            else:
                pop = ext.pop
                hashes = [x for x in (pop(h, None) for h in hashes) if x is not None]
        if stored:
            core.store(slot, hashes)
        else:
            core.remove(slot, hashes)

    def _apply_events(self, st: _InstanceState, events: list) -> None:
        core = self.core
        for ev in events:
            if type(ev) is not AllBlocksCleared and ev.tier != "gpu":
                self._apply_tier(st, ev)
            elif type(ev) is BlockStored:
                self._store(st, ev)
            elif type(ev) is BlockRemoved:
                if st.rehash:
                    pop = st.ext2local.pop
                    core.remove(st.slot, [x for x in (pop(h, None) for h in ev.block_hashes) if x is not None])
                else:
                    core.remove(st.slot, ev.block_hashes)
            elif type(ev) is AllBlocksCleared:
                core.clear_slot(st.slot)
                self._clear_tiers(core.keys[st.slot])  # type: ignore[arg-type]
                st.ext2local.clear()
                st.tier_ext.clear()

    def _store(self, st: _InstanceState, ev: BlockStored) -> None:
        hashes = ev.block_hashes
        if not hashes:
            return
        if st.rehash is None and ev.token_ids:
            st.rehash = not self._uses_our_hash(ev)
            if st.rehash:  # blocks stored before we knew were indexed under the engine's hashes
                st.ext2local.update((h, h) for h in self.core.holds[st.slot])  # type: ignore[union-attr]
        if not st.rehash:
            self.core.store(st.slot, hashes)
            return
        bs = self.block_size
        tokens = ev.token_ids
        if len(tokens) != len(hashes) * bs:
            self._drop(st, "BlockStored token_ids do not cover its blocks at the router's block size")
            return
        parent = ev.parent_block_hash
        if parent is not None:
            parent = st.ext2local.get(parent)
            if parent is None:
                self._drop(st, "BlockStored whose parent block is not indexed")
                return
        seed = lora_seed(ev.lora_name) if ev.lora_name else SEED  # an adapter's blocks: its own hash space
        if ev.media_hashes:
            local = []
            mm = ev.media_hashes
            for b in range(len(hashes)):
                parent = block_hash(parent, tokens[b * bs:(b + 1) * bs], mm[b] if b < len(mm) else (), seed)
                local.append(parent)
        else:
            local = block_hashes(tokens, bs, parent, seed=seed)
        ext2local = st.ext2local
        for e, h in zip(hashes, local):
            ext2local[e] = h
        self.core.store(st.slot, local)

    def _uses_our_hash(self, ev: BlockStored) -> bool:
        bs = self.block_size
        if len(ev.token_ids) < bs:
            return True
        media = ev.media_hashes[0] if ev.media_hashes else ()
        seed = lora_seed(ev.lora_name) if ev.lora_name else SEED
        return block_hash(ev.parent_block_hash, ev.token_ids[:bs], media, seed) == ev.block_hashes[0]

    def _drop(self, st: _InstanceState, why: str) -> None:
        self.dropped_events += 1
        if not st.drop_logged:
            st.drop_logged = True
            log.warning("KV events of instance %s: %s; dropped (further drops are silent)",
                        self.core.keys[st.slot], why)

    # --- queries --------------------------------------------------------------------------
    def find_matches(self, hashes: list[int]) -> dict[InstanceKey, float]:
        """Overlap per instance: GPU prefix blocks, plus weighted host / disk blocks continuing it."""
        found = self.core.find_matches(hashes)
        wh, wd = self.host_weight, self.disk_weight
        if wh <= 0.0 and wd <= 0.0:
            return found  # type: ignore[return-value]
        host, disk = self.tiers["host"], self.tiers["disk"]
        if not host.nodes and not disk.nodes:
            return found  # type: ignore[return-value]
        n = len(hashes)
        out: dict[InstanceKey, float] = dict(found)
        for key in self._state:
            hs = host.holds[host.slot_of[key]] if wh > 0.0 else None
            ds = disk.holds[disk.slot_of[key]] if wd > 0.0 else None
            if not hs and not ds:
                continue
            i = found.get(key, 0)
            score = float(i)
            while i < n:
                h = hashes[i]
                if hs and h in hs:
                    score += wh
                elif ds and h in ds:
                    score += wd
                else:
                    break
                i += 1
            if score > 0.0:
                out[key] = score
        return out

    def tier_held(self, key: InstanceKey) -> dict[str, set[int]]:
        """Hashes indexed for key per tier ("gpu", "host", "disk")."""
        out = {"gpu": self.core.held(key)}
        out.update((name, t.held(key)) for name, t in self.tiers.items())
        return out

    def size(self) -> int:
        return self.core.size()
