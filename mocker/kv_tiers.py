"""Host (G2) and disk (G3) KV offload tiers of one dp rank, after Dynamo's KVBM.

- Write-through: every block registered on the GPU is queued for device -> host offload; a block that lands on
  the host is queued for host -> disk when the disk filter lets it (frequency >= 2) or always with the filter off.
- Frequency (Dynamo's disk filter): 1 when first seen, doubled on each hit (GPU prefix hit or onboarding), decays
  by 1 per engine step; entries at 0 are forgotten.
- Bandwidth: each queue moves at most one block per `ms_per_block` of simulated step time (credits carry over);
  a queue longer than its tier's capacity drops its oldest entries (they would be evicted before landing anyway).
- LRU per tier: a full tier evicts its least recently used block (BlockRemoved with the tier); a hit refreshes it.
- Onboarding: `match` extends a GPU prefix hit with consecutive blocks found on host or disk; the scheduler
  copies them to fresh GPU blocks and pays `onboard_ms` (blocks x the tier's ms_per_block).

Tiers are copies (as in KVBM): a block can be on the GPU, the host and the disk at once; within a tier a hash is
held at most once. Events carry the tier, so a router index replaying them knows each instance's tiers.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable

from dynamo_mono.kv_events import BlockRemoved, BlockStored, KvbmMetrics, KvEvent

HOST = "host"
DISK = "disk"


@dataclass(slots=True)
class TierConfig:
    """Sizes (blocks; 0 = tier off) and per-block transfer times of the offload tiers."""

    host_blocks: int = 0
    disk_blocks: int = 0
    host_ms_per_block: float = 0.35  # ~8 MiB block over ~25 GB/s PCIe
    disk_ms_per_block: float = 1.7  # ~8 MiB block at ~5 GB/s NVMe
    disk_filter: bool = True

    @property
    def enabled(self) -> bool:
        return self.host_blocks > 0 or self.disk_blocks > 0


@dataclass(slots=True)
class TierStats:
    """Counters behind the kvbm_* metrics."""

    offload_d2h: int = 0  # kvbm_offload_blocks_d2h
    offload_h2d: int = 0  # kvbm_offload_blocks_h2d (host -> disk)
    offload_d2d: int = 0  # device -> disk (no host tier)
    onboard_h2d: int = 0  # kvbm_onboard_blocks_h2d (host -> device)
    onboard_d2d: int = 0  # kvbm_onboard_blocks_d2d (disk -> device)
    matched_tokens: int = 0  # kvbm_matched_tokens
    host_queried: int = 0  # blocks looked up on the host (after the GPU prefix)
    host_hits: int = 0
    disk_queried: int = 0
    disk_hits: int = 0
    dropped_queued: int = 0  # queued offloads dropped because the queue outgrew the tier

    @property
    def host_hit_rate(self) -> float:
        return self.host_hits / self.host_queried if self.host_queried else 0.0

    @property
    def disk_hit_rate(self) -> float:
        return self.disk_hits / self.disk_queried if self.disk_queried else 0.0

    def export(self) -> KvbmMetrics:
        return KvbmMetrics(self.offload_d2h, self.offload_h2d, self.offload_d2d, self.onboard_h2d,
                           self.onboard_d2d, self.matched_tokens, self.host_hit_rate, self.disk_hit_rate)


@dataclass(slots=True)
class BlockMeta:
    """What a tier keeps of a block to republish it: its chain parent, tokens, media hashes, adapter."""

    parent: int | None
    tokens: list[int]
    media: list[int] | None
    lora_name: str | None


def tier_config(opts: dict[str, Any]) -> TierConfig:
    """TierConfig from the mocker's resolved options (sizes in blocks or GiB, bandwidths in GB/s)."""
    block_bytes = int(opts["block_size"]) * int(opts["kv_bytes_per_token"])

    def blocks(tier: str) -> int:
        gb = float(opts[f"kv_{tier}_gb"])
        return int(gb * 1024 ** 3) // block_bytes if gb else int(opts[f"kv_{tier}_blocks"])

    return TierConfig(blocks("host"), blocks("disk"),
                      block_bytes / (float(opts["kv_host_bandwidth_gbps"]) * 1e6),
                      block_bytes / (float(opts["kv_disk_bandwidth_gbps"]) * 1e6),
                      bool(opts["kv_disk_offload_filter"]))


class _Tier:
    """One LRU tier with its inbound queue and bandwidth credit."""

    __slots__ = ("name", "capacity", "ms_per_block", "blocks", "queue", "credit")

    def __init__(self, name: str, capacity: int, ms_per_block: float) -> None:
        self.name = name
        self.capacity = capacity
        self.ms_per_block = ms_per_block
        self.blocks: OrderedDict[int, BlockMeta] = OrderedDict()  # first = least recently used
        self.queue: deque[tuple[int, BlockMeta]] = deque()
        self.credit = 0.0


class TierStore:
    """Host and disk tiers; events go through `emit` (the KvManager's event list)."""

    def __init__(self, cfg: TierConfig, block_size: int, emit: Callable[[KvEvent], None]) -> None:
        self.cfg = cfg
        self.block_size = block_size
        self.emit = emit
        self.host = _Tier(HOST, cfg.host_blocks, cfg.host_ms_per_block) if cfg.host_blocks > 0 else None
        self.disk = _Tier(DISK, cfg.disk_blocks, cfg.disk_ms_per_block) if cfg.disk_blocks > 0 else None
        self.freq: dict[int, int] = {}
        self.stats = TierStats()

    # --- inputs from the GPU pool ----------------------------------------------------------------
    def register(self, h: int, meta: BlockMeta) -> None:
        """A block was registered on the GPU: count it and queue its write-through offload."""
        self.freq.setdefault(h, 1)
        first = self.host or self.disk
        if first is not None and h not in first.blocks:
            self._enqueue(first, h, meta)

    def hit(self, h: int) -> None:
        """A block was reused (GPU prefix hit or onboarding): its frequency doubles."""
        self.freq[h] = max(1, self.freq.get(h, 0)) * 2
        host = self.host
        if host is not None:
            meta = host.blocks.get(h)
            if meta is not None:
                host.blocks.move_to_end(h)
                self._maybe_to_disk(h, meta)

    # --- queries ---------------------------------------------------------------------------------
    def match(self, hashes: list[int], start: int, stop: int) -> list[str]:
        """Tier of each consecutive block hashes[start:stop] held on host or disk (host preferred)."""
        out: list[str] = []
        host = self.host.blocks if self.host is not None else {}
        disk = self.disk.blocks if self.disk is not None else {}
        for i in range(start, stop):
            h = hashes[i]
            if h in host:
                out.append(HOST)
            elif h in disk:
                out.append(DISK)
            else:
                break
        return out

    def onboard(self, hashes: list[int], start: int, tiers: list[str], queried: int) -> float:
        """Account onboarding tiers[i] of hashes[start + i] (queried = blocks looked up past the GPU prefix);
        returns the transfer time in ms."""
        st = self.stats
        nh = tiers.count(HOST)
        nd = len(tiers) - nh
        if self.host is not None:
            st.host_queried += queried
            st.host_hits += nh
        if self.disk is not None:
            st.disk_queried += queried - nh
            st.disk_hits += nd
        st.onboard_h2d += nh
        st.onboard_d2d += nd
        st.matched_tokens += len(tiers) * self.block_size
        for i, tier in enumerate(tiers):
            h = hashes[start + i]
            t = self.host if tier == HOST else self.disk
            assert t is not None
            t.blocks.move_to_end(h)
            self.hit(h)
        ms = 0.0
        if nh:
            ms += nh * self.cfg.host_ms_per_block
        if nd:
            ms += nd * self.cfg.disk_ms_per_block
        return ms

    # --- time --------------------------------------------------------------------------------------
    def tick(self, step_ms: float) -> None:
        """One engine step of step_ms: decay frequencies, then move what each queue's bandwidth allows."""
        freq = self.freq
        if freq:
            gone = [h for h, f in freq.items() if f <= 1]
            for h in freq:
                freq[h] -= 1
            for h in gone:
                del freq[h]
        for tier in (self.host, self.disk):
            if tier is None or not tier.queue:
                if tier is not None:
                    tier.credit = 0.0  # idle bandwidth is not banked
                continue
            tier.credit += step_ms / tier.ms_per_block if tier.ms_per_block > 0 else len(tier.queue)
            while tier.queue and tier.credit >= 1.0:
                tier.credit -= 1.0
                h, meta = tier.queue.popleft()
                self._land(tier, h, meta)

    def clear(self) -> None:
        """Forget everything (instance crash); the caller emits AllBlocksCleared."""
        for tier in (self.host, self.disk):
            if tier is not None:
                tier.blocks.clear()
                tier.queue.clear()
                tier.credit = 0.0
        self.freq.clear()

    def resident(self) -> dict[str, set[int]]:
        return {t.name: set(t.blocks) for t in (self.host, self.disk) if t is not None}

    def snapshot(self) -> list[BlockStored]:
        """One tier-tagged BlockStored per block held, for index recovery."""
        out: list[BlockStored] = []
        for tier in (self.host, self.disk):
            if tier is None:
                continue
            for h, m in tier.blocks.items():
                out.append(self._stored(tier.name, h, m))
        return out

    # --- internals ---------------------------------------------------------------------------------
    def _enqueue(self, tier: _Tier, h: int, meta: BlockMeta) -> None:
        q = tier.queue
        q.append((h, meta))
        if len(q) > tier.capacity:
            q.popleft()
            self.stats.dropped_queued += 1

    def _maybe_to_disk(self, h: int, meta: BlockMeta) -> None:
        disk = self.disk
        if disk is None or h in disk.blocks:
            return
        if self.cfg.disk_filter and self.freq.get(h, 0) < 2:
            return
        if any(q[0] == h for q in disk.queue):
            return
        self._enqueue(disk, h, meta)

    def _land(self, tier: _Tier, h: int, meta: BlockMeta) -> None:
        blocks = tier.blocks
        if h in blocks:
            blocks.move_to_end(h)
            return
        if len(blocks) >= tier.capacity:
            old, _ = blocks.popitem(last=False)
            self.emit(BlockRemoved([old], tier=tier.name))
        blocks[h] = meta
        self.emit(self._stored(tier.name, h, meta))
        st = self.stats
        if tier is self.host:
            st.offload_d2h += 1
            self._maybe_to_disk(h, meta)
        elif self.host is not None:
            st.offload_h2d += 1
        else:
            st.offload_d2d += 1

    def _stored(self, tier: str, h: int, m: BlockMeta) -> BlockStored:
        ev = BlockStored([h], m.parent, list(m.tokens), self.block_size, m.lora_name, tier=tier)
        if m.media:
            ev.media_hashes = [list(m.media)]
        return ev
