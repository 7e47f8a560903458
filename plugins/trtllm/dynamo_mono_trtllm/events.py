"""Converts TensorRT-LLM's KV cache event dicts (LLM.get_kv_cache_events_async) into dynamo-mono KV events.

As Dynamo's TRT-LLM publisher does: block hashes become signed 64-bit ints; a stored block holding fewer than
tokens_per_block tokens (a finished request's partial last block) ends the stored run and is remembered, so its
later removal is dropped too (the router only indexes whole blocks); `attention_dp_rank` is the dp rank; the
"created" events at startup give the attention window sizes, and once they are over only events of the largest
window (the global attention layers) are kept. The router re-hashes stored blocks from their token ids into its
own hash space and maps TensorRT-LLM's hashes for the removals. A mirror of the stored blocks serves snapshots.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from dynamo_mono.api import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent, KvEventBatch, KvEventSink

log = logging.getLogger("dynamo_mono.trtllm.kv")


def to_signed_i64(value: int) -> int:
    """Two's complement of a u64 hash in the signed 64-bit range (what Dynamo's router keys on)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


class KvEventConverter:
    """One instance's converter: handle() each event dict; batches go to the sink, tagged (worker_id, dp rank)."""

    def __init__(self, worker_id: int, block_size: int, dp_size: int = 1) -> None:
        self.worker_id = worker_id
        self.block_size = block_size
        self.dp_size = dp_size
        self.sink: KvEventSink | None = None
        self.event_ids = [0] * dp_size
        self.partial: list[set[int]] = [set() for _ in range(dp_size)]
        # per dp rank: block hash -> (parent hash, token ids), insertion ordered
        self.mirror: list[OrderedDict[int, tuple[int | None, list[int]]]] = [OrderedDict() for _ in range(dp_size)]
        self.max_window: int | None = None
        self._initial = True  # still reading the startup "created" events
        self.last_engine_id: int | None = None
        self.gaps = 0
        self.dropped_partial = 0

    def _rank(self, ev: dict) -> int:
        rank = ev.get("attention_dp_rank") or 0
        if not 0 <= rank < self.dp_size:
            log.warning("TensorRT-LLM KV event for attention DP rank %s of %d ranks: counted as rank 0", rank,
                        self.dp_size)
            return 0
        return rank

    def handle(self, ev: dict) -> KvEventBatch | None:
        """Convert one event dict; returns the batch pushed to the sink (None when nothing routable)."""
        data = ev.get("data") or {}
        kind = data.get("type")
        eid = ev.get("event_id")
        if isinstance(eid, int):
            if self.last_engine_id is not None and eid != self.last_engine_id + 1:
                self.gaps += 1  # the engine's buffer overflowed between polls: the index may miss blocks
                log.warning("TensorRT-LLM KV events: event id %d after %d (events lost; raise "
                            "--event-buffer-max-size)", eid, self.last_engine_id)
            self.last_engine_id = eid
        if kind == "created":
            if self._initial and isinstance(ev.get("window_size"), int):
                self.max_window = max(self.max_window or 0, ev["window_size"])
            return None
        self._initial = False
        window = ev.get("window_size")
        if window is not None and self.max_window is not None and window != self.max_window:
            return None  # a sliding-window layer group's blocks: not what a prefix match reuses
        rank = self._rank(ev)
        events: list[KvEvent] = []
        if kind == "stored":
            stored = self._stored(rank, data)
            if stored is not None:
                events.append(stored)
        elif kind == "removed":
            hashes = []
            partial = self.partial[rank]
            mirror = self.mirror[rank]
            for h in data.get("block_hashes") or ():
                if h is None:
                    continue
                h = to_signed_i64(h)
                if h in partial:
                    partial.discard(h)
                    continue
                hashes.append(h)
                mirror.pop(h, None)
            if hashes:
                events.append(BlockRemoved(hashes))
        elif kind == "cleared":
            self.mirror[rank].clear()
            self.partial[rank].clear()
            events.append(AllBlocksCleared())
        # "updated" (priority / cache level of a block already stored) changes nothing the router indexes
        if not events:
            return None
        self.event_ids[rank] += 1
        batch = KvEventBatch(self.worker_id, rank, self.event_ids[rank], events, time.time())
        sink = self.sink
        if sink is not None:
            try:
                sink(batch)
            except Exception:  # a broken consumer must not stop the poller
                log.exception("TensorRT-LLM KV event sink failed")
        return batch

    def _stored(self, rank: int, data: dict) -> BlockStored | None:
        bs = self.block_size
        parent_raw = data.get("parent_hash")
        parent = None if parent_raw is None else to_signed_i64(parent_raw)
        hashes: list[int] = []
        tokens: list[int] = []
        mirror = self.mirror[rank]
        prev = parent
        for block in data.get("blocks") or ():
            toks = [int(t["token_id"]) for t in block.get("tokens") or ()]
            raw = block.get("block_hash")
            if raw is None:
                continue
            h = to_signed_i64(raw)
            if len(toks) > bs:
                log.error("TensorRT-LLM KV event: block of %d tokens with tokens_per_block %d; event dropped",
                          len(toks), bs)
                return None
            if len(toks) < bs:
                self.partial[rank].add(h)  # a partial block ends the run: nothing after it is routable
                self.dropped_partial += 1
                break
            hashes.append(h)
            tokens.extend(toks)
            mirror[h] = (prev, toks)
            prev = h
        if not hashes:
            return None
        return BlockStored(hashes, parent, tokens, bs)

    def snapshot(self) -> list[KvEventBatch]:
        """The mirrored cache as one BlockStored-per-block batch per dp rank (parents before children)."""
        now = time.time()
        out = []
        for rank, mirror in enumerate(self.mirror):
            events: list[KvEvent] = []
            present: set[int] = set()
            for h, (parent, toks) in mirror.items():
                if parent is not None and parent not in present:
                    continue  # parent evicted before the child: the prefix is unreachable anyway
                events.append(BlockStored([h], parent, list(toks), self.block_size))
                present.add(h)
            out.append(KvEventBatch(self.worker_id, rank, self.event_ids[rank], events, now))
        return out


async def poll(source: Any, handle: Any, interval: float, stopped: Any) -> None:
    """Drain an IterationResult-returning call (get_kv_cache_events_async / get_stats_async) until stopped():
    each round waits up to `interval` for data; an empty round backs off (the real iterator may end at once)."""
    import asyncio

    delay = interval / 8
    while not stopped():
        got = False
        try:
            async for item in source(interval):
                got = True
                handle(item)
        except (asyncio.TimeoutError, TimeoutError, asyncio.QueueEmpty):
            pass
        if got:
            delay = interval / 8
        else:
            await asyncio.sleep(delay)
            delay = min(interval, delay * 2)
