"""Approximate KV index for engines without KV events: predicts cache contents from routing decisions.

After a request is routed, its prompt blocks are assumed cached on the chosen instance. Each
(instance, block) prediction lives `ttl` seconds from its last refresh; when more than `max_size`
predictions exist, the oldest are dropped until `prune_ratio * max_size` remain.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from dynamo_mono.engine import InstanceKey
from dynamo_mono.router.indexer import BlockMembership


class ApproxIndexer:
    """TTL- and size-bounded predicted cache membership, oldest-first expiry."""

    def __init__(self, ttl_secs: float, max_size: int, prune_ratio: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl_secs
        self.max_size = max_size
        self.prune_target = max(0, int(max_size * prune_ratio))
        self.clock = clock
        self.core = BlockMembership()
        # (slot, hash) -> time of last prediction; insertion order == age order (refresh moves to end)
        self._age: OrderedDict[tuple[int, int], float] = OrderedDict()

    def add_instance(self, key: InstanceKey) -> None:
        self.core.add(key)

    def remove_instance(self, key: InstanceKey) -> bool:
        slot = self.core.slot_of.get(key)
        if slot is None:
            return False
        pop = self._age.pop
        for h in self.core.holds[slot]:  # type: ignore[union-attr]
            pop((slot, h), None)
        self.core.drop(key)
        return True

    def record(self, key: InstanceKey, hashes: list[int]) -> None:
        """Predict that key now caches every block of hashes."""
        slot = self.core.slot_of.get(key)
        if slot is None or not hashes:
            return
        now = self.clock()
        self._expire(now)
        age = self._age
        move = age.move_to_end
        for h in hashes:
            k = (slot, h)
            if k in age:
                move(k)
            age[k] = now
        self.core.store(slot, hashes)
        if len(age) > self.max_size:
            self._evict_oldest(len(age) - self.prune_target)

    def find_matches(self, hashes: list[int]) -> dict[InstanceKey, int]:
        self._expire(self.clock())
        return self.core.find_matches(hashes)

    def size(self) -> int:
        """Number of live (instance, block) predictions."""
        return len(self._age)

    def _expire(self, now: float) -> None:
        age = self._age
        if not age:
            return
        cutoff = now - self.ttl
        n = 0
        for t in age.values():
            if t > cutoff:
                break
            n += 1
        if n:
            self._evict_oldest(n)

    def _evict_oldest(self, n: int) -> None:
        age = self._age
        by_slot: dict[int, list[int]] = {}
        for _ in range(min(n, len(age))):
            (slot, h), _t = age.popitem(last=False)
            by_slot.setdefault(slot, []).append(h)
        for slot, hashes in by_slot.items():
            self.core.remove(slot, hashes)
