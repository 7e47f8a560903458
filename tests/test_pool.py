"""Instance pool details that a user notices: how priority reaches each kind of engine, and that the
request a caller hands in is never changed (so a migrated retry is not pinned to where the first try ran)."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from dynamo_mono.config import defaults
from dynamo_mono.engine import EngineOutput, EngineRequest, ModelCard, SamplingParams, StopConditions
from dynamo_mono.router import ROUTER_OPTIONS, Router
from dynamo_mono.serving.pool import Instance, InstancePool, engine_priority


def test_priority_translated_per_engine() -> None:
    vllm_like = ModelCard("m", 128, 16, supports_priority=True)
    sglang_like = ModelCard("m", 128, 16, supports_priority=True, priority_higher_is_urgent=True)
    none = ModelCard("m", 128, 16)
    assert engine_priority(vllm_like, -5) == -5
    assert engine_priority(sglang_like, -5) == 5
    assert engine_priority(none, -5) == 0


# --- requests handed to the pool are never mutated; a retry is not pinned to the dead instance's rank ---
TOKENS = list(range(100, 120))


@dataclass
class FakeEngine:
    """Streams TOKENS (continuing after migrated ones), one per output; with fail_after, emits that many and
    then fails, staying down. Records the (dp_rank, priority) of each request it was handed."""

    card: ModelCard
    fail_after: int | None = None
    seen: list[tuple[int | None, int]] = field(default_factory=list)
    down: bool = False

    async def generate(self, req: EngineRequest):
        self.seen.append((req.dp_rank, req.priority))
        if self.down:
            yield EngineOutput(finish_reason="error", error="down")
            return
        done = int(req.extra.get("migrated_output_tokens") or 0)
        for i in range(req.stop.max_tokens):
            if self.fail_after is not None and i == self.fail_after:
                self.down = True
                yield EngineOutput(finish_reason="error", error="instance failed")
                return
            last = i == req.stop.max_tokens - 1
            yield EngineOutput(token_ids=[TOKENS[done + i]], finish_reason="length" if last else None)

    def healthy(self) -> bool:
        return not self.down

    def set_kv_event_sink(self, sink) -> None:
        pass

    def kv_snapshot(self) -> list:
        return []


def _pool(*instances: tuple[int, FakeEngine]) -> InstancePool:
    settings = defaults(ROUTER_OPTIONS).replace(router_mode="kv")
    router = Router(settings, block_size=4, registry=CollectorRegistry(), model="m", rng=random.Random(0))
    pool = InstancePool("m", router, migration_limit=1)
    for wid, engine in instances:
        pool.add(Instance(worker_id=wid, engine=engine, card=engine.card))
    return pool


def _request(**kw) -> EngineRequest:
    return EngineRequest("r1", [1, 2, 3, 4, 5], SamplingParams(seed=1), StopConditions(max_tokens=len(TOKENS)),
                         priority=-3, **kw)


def _card(dp_size: int) -> ModelCard:
    return ModelCard("m", 128, 4, dp_size=dp_size, supports_priority=True, priority_higher_is_urgent=True)


async def test_generate_does_not_mutate_the_callers_request() -> None:
    engine = FakeEngine(_card(2))
    pool = _pool((0, engine))
    req = _request()
    before = copy.deepcopy(req)
    got = [t async for out in pool.generate(req) for t in out.token_ids]
    assert got == TOKENS
    assert engine.seen[0][0] in (0, 1) and engine.seen[0][1] == 3  # the engine got a rank and its own priority
    assert req == before  # ... on a copy: the caller's request still has no rank and the API priority


async def test_retry_is_not_pinned_to_the_failed_instances_dp_rank() -> None:
    a, b = FakeEngine(_card(2), fail_after=5), FakeEngine(_card(1))
    pool = _pool((0, a), (1, b))
    pool.router.select("busy", [], 4, pinned=(0, 0))  # A's rank 0 is loaded: the request lands on A's rank 1
    req = _request(worker_id=0)
    got = [t async for out in pool.generate(req) for t in out.token_ids]
    assert a.seen == [(1, 3)]
    assert b.seen == [(0, 3)]  # B has only rank 0: a retry pinned to rank 1 could not run there
    assert got == TOKENS  # no lost or repeated tokens
    assert req.dp_rank is None and req.priority == -3 and req.worker_id == 0
