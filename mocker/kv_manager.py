"""Paged KV block pool with ref counts, a prefix cache (block hash -> block) and vLLM-style LRU eviction.

Semantics follow vLLM v1's BlockPool / FreeKVCacheBlockQueue:
- every block with ref count 0 sits in the free queue; allocation takes the head (least recently freed);
- a freed sequence's cached blocks are appended in reverse order, so its suffix blocks are evicted before
  the prefix blocks other requests are more likely to share; its uncached blocks (the partial last one)
  go to the head, to be reused before any cached block is evicted;
- a cached block that is hit while free is taken out of the free queue (it becomes active again);
- a cached block is only evicted (BlockRemoved) when the free queue hands it out for reuse.

KV events mirror the cache exactly: BlockStored for each block newly entering the cache (a block
whose hash is already cached by another block stays uncached and emits nothing), BlockRemoved for
each cached block evicted. Replaying all events gives the set of cached hashes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict

from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent
from mocker.kv_tiers import BlockMeta, TierConfig, TierStore

trace_log = logging.getLogger("dynamo_mono.mocker.kv_trace")


def _trace_enabled() -> bool:
    return os.environ.get("DYN_MOCKER_KV_CACHE_TRACE", "").strip().lower() in ("1", "true", "yes", "on")


class KvManager:
    """Block pool of one dp rank. Sequences own their block-id lists; this class owns ref counts and the cache."""

    def __init__(self, num_blocks: int, block_size: int, *, enable_prefix_caching: bool = True,
                 dp_rank: int = 0, tiers: TierConfig | None = None) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.dp_rank = dp_rank
        self.ref: list[int] = [0] * num_blocks
        self.blk_hash: list[int | None] = [None] * num_blocks
        self.blk_parent: list[int | None] = [None] * num_blocks
        self.blk_tokens: list[list[int] | None] = [None] * num_blocks
        self.blk_media: list[list[int] | None] = [None] * num_blocks  # media content hashes mixed into the hash
        self.cached: dict[int, int] = {}  # block hash -> block id
        # Insertion-ordered free queue: first key = next block handed out (LRU head).
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.cached_free = 0  # cached blocks with ref 0 ("inactive")
        self.events: list[KvEvent] = []
        self.trace = _trace_enabled()
        # Host / disk offload tiers (None = GPU only); they publish through self.events.
        self.tiers: TierStore | None = (TierStore(tiers, block_size, self._emit)
                                        if tiers is not None and tiers.enabled and enable_prefix_caching else None)

    def _emit(self, ev: KvEvent) -> None:
        self.events.append(ev)

    # --- queries ---------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def active_blocks(self) -> int:
        return self.num_blocks - len(self.free)

    def usage(self) -> float:
        return (self.num_blocks - len(self.free)) / self.num_blocks

    def match_prefix(self, hashes: list[int], max_blocks: int) -> list[int]:
        """Block ids of the longest cached prefix of `hashes` (at most max_blocks); does not touch them."""
        if not self.enable_prefix_caching:
            return []
        cached = self.cached
        out: list[int] = []
        for h in hashes[:max_blocks]:
            blk = cached.get(h)
            if blk is None:
                break
            out.append(blk)
        return out

    def evictable(self, hit_blocks: list[int]) -> int:
        """How many of hit_blocks currently sit in the free queue (taking them shrinks the free pool)."""
        ref = self.ref
        return sum(1 for b in hit_blocks if ref[b] == 0)

    # --- mutation ----------------------------------------------------------------------------
    def allocate(self, blocks: list[int], num_new: int, hit_blocks: list[int] | None = None) -> bool:
        """Append hit_blocks (shared, ref+1) and num_new fresh blocks to `blocks`; False (no change) if short."""
        free = self.free
        ref = self.ref
        if hit_blocks:
            if num_new > len(free) - self.evictable(hit_blocks):
                return False
            tiers = self.tiers
            for b in hit_blocks:
                if tiers is not None:
                    tiers.hit(self.blk_hash[b])  # type: ignore[arg-type]
                if ref[b] == 0:
                    del free[b]
                    self.cached_free -= 1
                ref[b] += 1
                blocks.append(b)
        elif num_new > len(free):
            return False
        if num_new == 0:
            return True
        evicted: list[int] | None = None
        new_ids: list[int] | None = [] if self.trace else None
        blk_hash = self.blk_hash
        for _ in range(num_new):
            b, _none = free.popitem(last=False)
            h = blk_hash[b]
            if h is not None:
                # The block leaves the cache for good: this is the eviction point.
                blk_hash[b] = None
                self.blk_tokens[b] = None
                self.blk_parent[b] = None
                self.blk_media[b] = None
                del self.cached[h]
                self.cached_free -= 1
                if evicted is None:
                    evicted = []
                evicted.append(h)
                if self.trace:
                    self._trace("evict", [b])
            ref[b] = 1
            blocks.append(b)
            if new_ids is not None:
                new_ids.append(b)
        if evicted:
            self.events.append(BlockRemoved(evicted))
        if new_ids:
            self._trace("allocate", new_ids)
        return True

    def free_blocks(self, blocks: list[int]) -> None:
        """Drop one reference to each block, last block first. Like vLLM (>= 0.11), cached blocks reaching 0
        join the free queue tail (LRU eviction) and uncached ones its head (reused first, sparing cached ones)."""
        ref = self.ref
        free = self.free
        blk_hash = self.blk_hash
        released: list[int] | None = [] if self.trace else None
        reuse_first: list[int] = []
        for b in reversed(blocks):
            r = ref[b] - 1
            ref[b] = r
            if r == 0:
                if blk_hash[b] is not None:
                    free[b] = None
                    self.cached_free += 1
                else:
                    reuse_first.append(b)
                if released is not None:
                    released.append(b)
        for b in reversed(reuse_first):  # reuse_first[0] ends up at the head
            free[b] = None
            free.move_to_end(b, last=False)
        blocks.clear()
        if released:
            self._trace("free", released)

    def commit(self, blocks: list[int], hashes: list[int], tokens: list[int], start: int, end: int,
               media: dict[int, list[int]] | None = None, lora_name: str | None = None) -> None:
        """Register full blocks start..end-1 of a sequence in the prefix cache (BlockStored for new ones);
        `media` maps a block index to the media content hashes mixed into its hash (block_hash.block_media)."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        cached = self.cached
        blk_hash = self.blk_hash
        ev: BlockStored | None = None
        for i in range(start, end):
            h = hashes[i]
            b = blocks[i]
            if h in cached or blk_hash[b] is not None:
                ev = None  # duplicate content already cached elsewhere: stays uncached, breaks the run
                continue
            parent = hashes[i - 1] if i else None
            toks = tokens[i * bs:(i + 1) * bs]
            cached[h] = b
            blk_hash[b] = h
            self.blk_parent[b] = parent
            self.blk_tokens[b] = toks
            mm = media.get(i) if media else None
            self.blk_media[b] = mm
            if self.tiers is not None:
                self.tiers.register(h, BlockMeta(parent, toks, list(mm) if mm else None, lora_name))
            if ev is None:
                ev = BlockStored([h], parent, list(toks), bs, lora_name)
                if mm:
                    ev.media_hashes = [list(mm)]
                self.events.append(ev)
            else:
                ev.block_hashes.append(h)
                ev.token_ids.extend(toks)
                if mm or ev.media_hashes:
                    if not ev.media_hashes:
                        ev.media_hashes = [[] for _ in range(len(ev.block_hashes) - 1)]
                    ev.media_hashes.append(list(mm or ()))

    def clear(self) -> None:
        """Forget everything (instance crash): all blocks free, cache empty, one AllBlocksCleared event."""
        n = self.num_blocks
        self.ref = [0] * n
        self.blk_hash = [None] * n
        self.blk_parent = [None] * n
        self.blk_tokens = [None] * n
        self.blk_media = [None] * n
        self.cached.clear()
        self.free = OrderedDict.fromkeys(range(n))
        self.cached_free = 0
        if self.tiers is not None:
            self.tiers.clear()
        self.events.append(AllBlocksCleared())

    def take_events(self) -> list[KvEvent]:
        ev = self.events
        self.events = []
        return ev

    def snapshot(self) -> list[BlockStored]:
        """One BlockStored per cached block, parents before children, for index recovery."""
        out: list[BlockStored] = []
        done: set[int] = set()
        cached = self.cached
        for h in cached:
            chain: list[int] = []
            cur: int | None = h
            while cur is not None and cur in cached and cur not in done:
                chain.append(cur)
                done.add(cur)
                cur = self.blk_parent[cached[cur]]
            for x in reversed(chain):
                b = cached[x]
                mm = self.blk_media[b]
                out.append(BlockStored([x], self.blk_parent[b], list(self.blk_tokens[b] or ()), self.block_size,
                                       media_hashes=[list(mm)] if mm else []))
        if self.tiers is not None:
            out.extend(self.tiers.snapshot())
        return out

    def _trace(self, event: str, block_ids: list[int]) -> None:
        active = self.num_blocks - len(self.free)
        trace_log.info(json.dumps({
            "event": event,
            "timestamp_ms": int(time.time() * 1000),
            "block_ids": block_ids,
            "block_size": self.block_size,
            "free_blocks_after": len(self.free),
            "active_blocks": active,
            "inactive_blocks": self.cached_free,
            "total_blocks": self.num_blocks,
            "dp_rank": self.dp_rank,
        }))
