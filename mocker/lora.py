"""Simulated LoRA serving: adapters registered by load_lora, a few GPU slots swapped LRU at a load-time cost."""

from __future__ import annotations

import asyncio
import json
import os
from collections import OrderedDict

from dynamo_mono.engine import EngineError, LoraAdapter


def read_rank(path: str) -> int:
    """The rank `r` of the peft adapter in directory `path` (EngineError(retryable=False) if it is not one)."""
    cfg = os.path.join(path, "adapter_config.json")
    try:
        with open(cfg, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise EngineError(f"mocker: {path} is not a LoRA adapter ({exc})", retryable=False) from None
    r = data.get("r") if isinstance(data, dict) else None
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise EngineError(f"mocker: {cfg} has no positive integer rank 'r'", retryable=False)
    return r


class LoraSlots:
    """Adapters known to the instance (load_lora) and `max_loras` GPU slots holding the ones in use.

    A request with an adapter acquires a slot before it is scheduled: a hit is free; a miss waits for a slot
    that no running request uses (the least recently used one is evicted) and pays `load_s` (a swap)."""

    def __init__(self, max_loras: int, max_rank: int, load_s: float) -> None:
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.load_s = load_s
        self.known: dict[str, LoraAdapter] = {}
        self.slots: OrderedDict[str, int] = OrderedDict()  # adapter -> requests using it; LRU first
        self.loading: dict[str, asyncio.Future] = {}
        self.swaps = 0
        self._waiters: list[asyncio.Future] = []  # requests waiting for a slot to become free

    def register(self, adapter: LoraAdapter) -> None:
        rank = read_rank(adapter.path)
        if self.max_rank and rank > self.max_rank:
            raise EngineError(f"mocker: adapter rank {rank} exceeds --max-lora-rank {self.max_rank}",
                              retryable=False)
        self.known[adapter.name] = adapter

    def forget(self, name: str) -> None:
        self.known.pop(name, None)
        if self.slots.get(name) == 0:
            del self.slots[name]

    async def acquire(self, name: str) -> None:
        if name not in self.known:
            raise EngineError(f"mocker: LoRA adapter '{name}' is not loaded on this instance", retryable=True)
        while True:
            if name in self.slots:
                self.slots[name] += 1
                self.slots.move_to_end(name)
                return
            pending = self.loading.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                continue
            if len(self.slots) >= self.max_loras:
                victim = next((n for n, users in self.slots.items() if users == 0), None)
                if victim is None:
                    fut = asyncio.get_running_loop().create_future()
                    self._waiters.append(fut)
                    await fut
                    continue
                del self.slots[victim]
            fut = asyncio.get_running_loop().create_future()
            self.loading[name] = fut
            self.swaps += 1
            try:
                if self.load_s > 0:
                    await asyncio.sleep(self.load_s)
                self.slots[name] = 0
            finally:
                del self.loading[name]
                fut.set_result(None)

    def release(self, name: str) -> None:
        """A request using the adapter ended (synchronous: it runs in generators' finally blocks)."""
        users = self.slots.get(name)
        if users is None:
            return
        self.slots[name] = users - 1
        if users == 1:
            if name not in self.known:
                del self.slots[name]
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)
