"""Rendezvous (HRW) placement of adapters over (worker_id, dp_rank) keys, with Dynamo's scoring."""

from __future__ import annotations

from typing import Iterable

import blake3

Key = tuple[int, int]


def hrw_score(lora_name: str, key: Key) -> int:
    """First 8 bytes (little-endian u64) of blake3(lora_name || worker_id LE u64 || dp_rank LE u32)."""
    worker_id, dp_rank = key
    data = lora_name.encode() + (worker_id & (2 ** 64 - 1)).to_bytes(8, "little") + dp_rank.to_bytes(4, "little")
    return int.from_bytes(blake3.blake3(data).digest()[:8], "little")


def replica_set(lora_name: str, keys: Iterable[Key], replica_factor: int) -> list[Key]:
    """The top min(replica_factor, n) keys by score, highest first (ties broken by the key, so the result does
    not depend on the order keys are given in). replica_factor <= 0 means every key."""
    ranked = sorted(keys, key=lambda k: (hrw_score(lora_name, k), k), reverse=True)
    return ranked if replica_factor <= 0 else ranked[:replica_factor]
