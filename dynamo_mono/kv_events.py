"""KV cache events published by engines and consumed by the router's indexer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class BlockStored:
    """New full blocks entered the prefix cache, chained after parent_block_hash."""

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int] = field(default_factory=list)
    block_size: int = 0
    lora_name: str | None = None
    # Per block, the content hashes of the media items whose placeholder tokens it holds (mixed into its hash,
    # block_hash.py), [] for a text block; an empty list = no media in any block.
    media_hashes: list[list[int]] = field(default_factory=list)
    # Where the blocks now live: "gpu" (the prefix cache), or an offload tier ("host", "disk") they were copied to.
    tier: str = "gpu"


@dataclass(slots=True)
class BlockRemoved:
    """Blocks were evicted from the prefix cache (tier "gpu") or dropped from an offload tier ("host", "disk")."""

    block_hashes: list[int]
    tier: str = "gpu"


@dataclass(slots=True)
class AllBlocksCleared:
    """The instance dropped its whole prefix cache."""


KV_TIERS = ("gpu", "host", "disk")

KvEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass(slots=True)
class KvEventBatch:
    """Events of one engine step for one (worker_id, dp_rank), with a monotonic event id."""

    worker_id: int
    dp_rank: int
    event_id: int
    events: list[KvEvent]
    timestamp: float = 0.0


@dataclass(slots=True)
class KvbmMetrics:
    """Offload-tier counters of one (instance, dp rank), exported under Dynamo KVBM's kvbm_* names."""

    offload_blocks_d2h: int = 0
    offload_blocks_h2d: int = 0  # host -> disk
    offload_blocks_d2d: int = 0  # device -> disk (no host tier)
    onboard_blocks_h2d: int = 0  # host -> device
    onboard_blocks_d2d: int = 0  # disk -> device
    matched_tokens: int = 0
    host_cache_hit_rate: float = 0.0
    disk_cache_hit_rate: float = 0.0
