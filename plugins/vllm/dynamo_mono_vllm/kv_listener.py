"""Receives vLLM's ZMQ KV-event stream, converts it to dynamo_mono.kv_events and mirrors the cached blocks.

With a `tcp://host:port` endpoint vLLM's publisher connects, so this side binds a SUB socket on an
ephemeral loopback port before the engine starts. Wire format per message: (topic, seq u64 BE,
msgpack KVEventBatch). vLLM has no cache snapshot API, so the listener keeps a mirror of the blocks
the events say are cached (hash -> parent, tokens) and serves `snapshot()` from it.

Blocks holding media placeholders carry vLLM's `extra_keys`: per block the (mm identifier, offset) of each item
in it. The identifier is the uuid the plugin passed in multi_modal_uuids (64 hex digits), whose first 16 digits are
the item's content hash: BlockStored.media_hashes gets those, so the router hashes the block as the server did.
"""

from __future__ import annotations

import asyncio
import logging
import time
import hashlib
from collections import OrderedDict
from typing import Any

from dynamo_mono.api import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent, KvEventBatch, KvEventSink

log = logging.getLogger("dynamo_mono.vllm.kv")

TOPIC = "kv"


def to_int_hash(h: Any) -> int:
    """vLLM block hashes are ints or (sha256) bytes; the router keys on ints, so take 64 bits of bytes."""
    if isinstance(h, int):
        return h
    return int.from_bytes(bytes(h)[:8], "little")


def media_content_hash(identifier: str) -> int:
    """The u64 content hash of a vLLM mm identifier: the first 16 hex digits of our uuid ("<lora>:<uuid>" when
    vLLM keys tower-connector LoRA per adapter). An identifier vLLM hashed itself (no uuid given, or processor
    kwargs mixed in) gets 64 bits of its SHA-256: distinct, though the router's hashes will not match it."""
    uid = identifier.rsplit(":", 1)[-1]
    if len(uid) >= 16:
        try:
            return int(uid[:16], 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.sha256(identifier.encode()).digest()[:8], "big")


def block_media_hashes(extra_keys: Any, n_blocks: int) -> list[list[int]]:
    """Per block, the content hashes of the media items in it from a BlockStored's extra_keys; [] when no block
    holds media. Entries are bare strings (LoRA name, cache salt), bytes (prompt-embeds digests) or
    (mm identifier, offset) pairs."""
    if not extra_keys:
        return []
    out: list[list[int]] = []
    found = False
    for b in range(n_blocks):
        keys = extra_keys[b] if b < len(extra_keys) else None
        hashes = [media_content_hash(k[0]) for k in keys or ()
                  if isinstance(k, (tuple, list)) and len(k) == 2 and isinstance(k[0], str)]
        found = found or bool(hashes)
        out.append(hashes)
    return out if found else []


# vLLM's KV event media (vllm.distributed.kv_events MEDIUM_*) -> our tiers; None/GPU = the prefix cache.
_MEDIUM_TIERS = {None: "gpu", "GPU": "gpu", "CPU": "host", "STORAGE": "disk"}


def _tier(medium: str | None) -> str | None:
    return _MEDIUM_TIERS.get(medium.upper() if isinstance(medium, str) else medium)


class KvEventListener:
    """One instance's KV event subscriber: bind, then `start()` a task that feeds the sink."""

    def __init__(self, worker_id: int, dp_size: int = 1) -> None:
        import zmq
        import zmq.asyncio

        self.worker_id = worker_id
        self.dp_size = dp_size
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC.encode())
        self.sock.setsockopt(zmq.RCVHWM, 0)  # never drop events on our side
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self._bind(dp_size)
        self.sink: KvEventSink | None = None
        self.event_ids = [0] * dp_size
        # Per dp rank: engine block hash -> (parent hash, token ids, block size, lora name, media content hashes),
        # insertion ordered.
        self.mirror: list[OrderedDict[int, tuple[int | None, list[int], int, str | None, list[int]]]] = [
            OrderedDict() for _ in range(dp_size)]
        self.received = 0
        self._last_seq: int | None = None
        self._task: asyncio.Task | None = None
        self._decoder: Any = None

    def _bind(self, dp_size: int) -> int:
        """Bind loopback port(s); vLLM offsets the port by the dp rank, so dp ranks need consecutive ports."""
        import random
        import zmq

        if dp_size == 1:
            self.sock.bind("tcp://127.0.0.1:*")
            endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
            return int(endpoint.rsplit(":", 1)[1])
        for _ in range(64):
            base = random.randint(20000, 60000 - dp_size)
            bound: list[str] = []
            try:
                for r in range(dp_size):
                    ep = f"tcp://127.0.0.1:{base + r}"
                    self.sock.bind(ep)
                    bound.append(ep)
                return base
            except zmq.ZMQError:
                for ep in bound:
                    self.sock.unbind(ep)
        raise RuntimeError(f"no {dp_size} consecutive free loopback ports for vLLM KV events")

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        from vllm.distributed.kv_events import KVEventBatch
        import msgspec

        self._decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
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
        recv = self.sock.recv_multipart
        while True:
            parts = await recv()
            if len(parts) != 3:
                continue
            try:
                seq = int.from_bytes(parts[1], "big")
                if self._last_seq is not None and seq != self._last_seq + 1:
                    log.warning("vLLM KV events of instance %d: sequence gap %d -> %d", self.worker_id,
                                self._last_seq, seq)
                self._last_seq = seq
                self.handle(self._decoder.decode(parts[2]))
            except Exception:  # a malformed batch must not end the listener
                log.exception("vLLM KV events of instance %d: bad batch dropped", self.worker_id)

    def handle(self, vbatch: Any) -> KvEventBatch | None:
        """Convert one vLLM KVEventBatch, update the mirror and push it to the sink."""
        rank = vbatch.data_parallel_rank or 0
        if not 0 <= rank < self.dp_size:
            rank = 0
        mirror = self.mirror[rank]
        events: list[KvEvent] = []
        for ev in vbatch.events:
            kind = type(ev).__name__
            tier = _tier(getattr(ev, "medium", None))
            if tier is None:
                continue  # a medium we have no tier for (remote / object store): not routable here
            if tier != "gpu" and kind in ("BlockStored", "BlockRemoved"):
                # native offload (OffloadingConnector: CPU / STORAGE): blocks named by vLLM's hash, no tokens;
                # the router maps them through the GPU blocks. The mirror (snapshots) holds the GPU cache only.
                hashes = [to_int_hash(h) for h in ev.block_hashes]
                events.append(BlockStored(hashes, None, tier=tier) if kind == "BlockStored"
                              else BlockRemoved(hashes, tier=tier))
                continue
            if kind == "BlockStored":
                hashes = [to_int_hash(h) for h in ev.block_hashes]
                parent = None if ev.parent_block_hash is None else to_int_hash(ev.parent_block_hash)
                tokens = list(ev.token_ids)
                bs = ev.block_size
                lora = getattr(ev, "lora_name", None)
                media = block_media_hashes(getattr(ev, "extra_keys", None), len(hashes))
                events.append(BlockStored(hashes, parent, tokens, bs, lora, media))
                prev = parent
                for i, h in enumerate(hashes):
                    mirror[h] = (prev, tokens[i * bs:(i + 1) * bs], bs, lora, media[i] if media else [])
                    prev = h
            elif kind == "BlockRemoved":
                hashes = [to_int_hash(h) for h in ev.block_hashes]
                events.append(BlockRemoved(hashes))
                for h in hashes:
                    mirror.pop(h, None)
            elif kind == "AllBlocksCleared":
                events.append(AllBlocksCleared())
                mirror.clear()
        if not events:
            return None
        self.received += len(events)
        self.event_ids[rank] += 1
        batch = KvEventBatch(self.worker_id, rank, self.event_ids[rank], events, vbatch.ts or time.time())
        sink = self.sink
        if sink is not None:
            try:
                sink(batch)
            except Exception:  # a broken consumer must not stop the listener
                log.exception("vLLM KV event sink failed")
        return batch

    def snapshot(self) -> list[KvEventBatch]:
        """The mirrored cache as one BlockStored-per-block batch per dp rank (parents before children)."""
        now = time.time()
        out = []
        for rank, mirror in enumerate(self.mirror):
            events: list[KvEvent] = []
            present = set()
            for h, (parent, tokens, bs, lora, media) in mirror.items():
                if parent is not None and parent not in present:
                    continue  # parent evicted before the child: the prefix is unreachable anyway
                events.append(BlockStored([h], parent, list(tokens), bs, lora, [list(media)] if media else []))
                present.add(h)
            out.append(KvEventBatch(self.worker_id, rank, self.event_ids[rank], events, now))
        return out
