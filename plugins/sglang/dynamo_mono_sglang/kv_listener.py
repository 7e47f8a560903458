"""Receives SGLang's ZMQ KV-event streams (one per dp rank), converts them to dynamo_mono.kv_events and mirrors the
cached blocks for snapshots.

SGLang 0.5.23 (python/sglang/srt/disaggregation/kv_events.py): with `--kv-events-config
{"publisher": "zmq", "endpoint": "tcp://HOST:PORT", "topic": T}` each dp rank's ZmqEventPublisher connects (a
concrete host; "*" would bind) to PORT + rank and sends multipart (topic, seq u64 BE, msgpack KVEventBatch).
KVEventBatch is the positional array [ts, events, attn_dp_rank]; each event a tagged msgpack map ({"type":
"BlockStored", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"?, ...},
{"type": "BlockRemoved", "block_hashes", "medium"?}, {"type": "AllBlocksCleared"}); omitted keys are None. Block
hashes are SGLang's own signed 64-bit ints: the router re-hashes blocks from token_ids, so they only need to be
consistent between BlockStored and BlockRemoved. Decoded without SGLang (plain msgpack), so a newer SGLang that
adds fields still decodes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from typing import Any

from dynamo_mono.api import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent, KvEventBatch, KvEventSink

log = logging.getLogger("dynamo_mono.sglang.kv")

TOPIC = "kv"
# SGLang's StorageMedium values -> our tiers; None = the device cache. EXTERNAL (a shared remote pool) is no tier here.
_MEDIUM_TIERS = {None: "gpu", "GPU": "gpu", "CPU_PINNED": "host", "CPU": "host", "DISK": "disk"}
# Positional field order of the events when a publisher sends them as arrays (tag first).
_FIELDS = {"BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"),
           "BlockRemoved": ("block_hashes", "medium"), "AllBlocksCleared": ()}


def _event_dict(ev: Any) -> dict[str, Any]:
    if isinstance(ev, dict):
        return ev
    if isinstance(ev, (list, tuple)) and ev and isinstance(ev[0], str):
        return {"type": ev[0], **dict(zip(_FIELDS.get(ev[0], ()), ev[1:]))}
    raise ValueError(f"not a KV event: {ev!r}")


def convert(raw_events: list[Any]) -> list[KvEvent]:
    """Our events for SGLang's decoded event list (unknown event types and tiers are skipped)."""
    out: list[KvEvent] = []
    for raw in raw_events:
        ev = _event_dict(raw)
        kind = ev.get("type")
        tier = _MEDIUM_TIERS.get(ev.get("medium"), None)
        if kind == "BlockStored":
            if tier is None:
                continue
            hashes = [int(h) for h in ev["block_hashes"]]
            parent = ev.get("parent_block_hash")
            tokens = [int(t) for t in ev.get("token_ids") or ()] if tier == "gpu" else []
            out.append(BlockStored(hashes, None if parent is None or tier != "gpu" else int(parent), tokens,
                                   int(ev.get("block_size") or 0) if tier == "gpu" else 0, ev.get("lora_name"),
                                   tier=tier))
        elif kind == "BlockRemoved":
            if tier is None:
                continue
            out.append(BlockRemoved([int(h) for h in ev["block_hashes"]], tier=tier))
        elif kind == "AllBlocksCleared":
            out.append(AllBlocksCleared())
    return out


class KvEventListener:
    """One instance's subscriber: binds dp_size consecutive loopback ports, then `start()` a task feeding the sink."""

    def __init__(self, worker_id: int, dp_size: int = 1) -> None:
        import zmq
        import zmq.asyncio

        self.worker_id = worker_id
        self.dp_size = dp_size
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self._bind()
        self.sink: KvEventSink | None = None
        self.event_ids = [0] * dp_size
        # Per dp rank: block hash -> (parent, tokens, block size, lora), parents before children.
        self.mirror: list[OrderedDict[int, tuple[int | None, list[int], int, str | None]]] = [
            OrderedDict() for _ in range(dp_size)]
        self.received = 0
        self._task: asyncio.Task | None = None

    def _bind(self) -> int:
        import zmq

        if self.dp_size == 1:
            self.sock.bind("tcp://127.0.0.1:*")
            return int(self.sock.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1])
        for _ in range(64):  # SGLang offsets the port by the dp rank: ranks need consecutive ports
            base = random.randint(20000, 60000 - self.dp_size)
            bound: list[str] = []
            try:
                for r in range(self.dp_size):
                    ep = f"tcp://127.0.0.1:{base + r}"
                    self.sock.bind(ep)
                    bound.append(ep)
                return base
            except zmq.ZMQError:
                for ep in bound:
                    self.sock.unbind(ep)
        raise RuntimeError(f"no {self.dp_size} consecutive free loopback ports for SGLang KV events")

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.sock.close(0)
        self.ctx.term()

    async def _run(self) -> None:
        import msgspec

        decode = msgspec.msgpack.decode
        while True:
            parts = await self.sock.recv_multipart()
            if len(parts) != 3:
                continue
            try:
                self.handle(decode(parts[2]))
            except Exception:  # a malformed batch must not end the listener
                log.exception("SGLang KV events of instance %d: bad batch dropped", self.worker_id)

    def handle(self, batch: Any) -> KvEventBatch | None:
        """Convert one decoded KVEventBatch ([ts, events, attn_dp_rank]), update the mirror, push it to the sink."""
        ts, raw_events = batch[0], batch[1]
        rank = batch[2] if len(batch) > 2 and batch[2] is not None else 0
        if not 0 <= rank < self.dp_size:
            rank = 0
        events = convert(raw_events)
        if not events:
            return None
        mirror = self.mirror[rank]
        for ev in events:
            if isinstance(ev, BlockStored) and ev.tier == "gpu":
                prev, bs = ev.parent_block_hash, ev.block_size
                for i, h in enumerate(ev.block_hashes):
                    mirror[h] = (prev, ev.token_ids[i * bs:(i + 1) * bs], bs, ev.lora_name)
                    prev = h
            elif isinstance(ev, BlockRemoved) and ev.tier == "gpu":
                for h in ev.block_hashes:
                    mirror.pop(h, None)
            elif isinstance(ev, AllBlocksCleared):
                mirror.clear()
        self.received += len(events)
        self.event_ids[rank] += 1
        out = KvEventBatch(self.worker_id, rank, self.event_ids[rank], events, float(ts or time.time()))
        sink = self.sink
        if sink is not None:
            try:
                sink(out)
            except Exception:  # a broken consumer must not stop the listener
                log.exception("SGLang KV event sink failed")
        return out

    def snapshot(self) -> list[KvEventBatch]:
        """The mirrored cache as one BlockStored-per-block batch per dp rank (parents before children)."""
        now = time.time()
        out = []
        for rank, mirror in enumerate(self.mirror):
            events: list[KvEvent] = []
            present: set[int] = set()
            for h, (parent, tokens, bs, lora) in mirror.items():
                if parent is not None and parent not in present:
                    continue
                events.append(BlockStored([h], parent, list(tokens), bs, lora))
                present.add(h)
            out.append(KvEventBatch(self.worker_id, rank, self.event_ids[rank], events, now))
        return out
