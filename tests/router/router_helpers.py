"""Helpers shared by the router tests: build routers, prompts and cached blocks."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry

from dynamo_mono.block_hash import block_hashes
from dynamo_mono.config import defaults
from dynamo_mono.kv_events import BlockStored, KvEventBatch
from dynamo_mono.router import ROUTER_OPTIONS, Router

BS = 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(n: int = 3, *, seed: int = 0, clock=None, registry=None, **changes) -> Router:
    settings = defaults(ROUTER_OPTIONS).replace(**{"router_mode": "kv", **changes})
    router = Router(settings, block_size=BS, registry=registry or CollectorRegistry(), model="m",
                    rng=random.Random(seed), **({"clock": clock} if clock else {}))
    for w in range(n):
        router.add_instance((w, 0))
    return router


def prompt(seed: int, blocks: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    toks = [rng.randrange(30000) for _ in range(blocks * BS)]
    return toks, block_hashes(toks, BS)


def cache(router: Router, key: tuple[int, int], hashes: list[int], event_id: int = 1) -> None:
    router.on_kv_events(KvEventBatch(key[0], key[1], event_id, [BlockStored(list(hashes), None)]))
