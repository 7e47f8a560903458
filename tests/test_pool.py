"""InstancePool with scripted fake engines: migration, error classes, disaggregated hand-off, priority,
output-block tracking, the "can never fit the KV cache" check, and embedding batches (retry, shape check)."""

from __future__ import annotations

import copy
import random
from dataclasses import replace
from typing import AsyncIterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from dynamo_mono.config import defaults
from dynamo_mono.engine import (
    EmbeddingOutput,
    EmbeddingRequest,
    EngineError,
    EngineOutput,
    EngineRequest,
    KvEndpoint,
    KvTransferParams,
    LoadMetrics,
    ModelCard,
    SamplingParams,
    StopConditions,
)
from dynamo_mono.http.errors import to_api_error
from dynamo_mono.serving.errors import ContextLengthExceeded
from dynamo_mono.router import ROUTER_OPTIONS, Router
from dynamo_mono.serving.pool import Instance, InstancePool, engine_priority, kv_blocks_needed

pytestmark = pytest.mark.timeout(20)

BS = 4
FIRST = 1000  # the fake engines generate FIRST + output position: a lost or repeated token shows


class FakeEngine:
    """Streams FIRST + position, one token per output; fails as told. Records every request it is handed."""

    def __init__(self, card: ModelCard, *, fail_after: int | None = None, fail_on_rank: int | None = None,
                 failure: str = "output", retryable: bool = True, down_after_failure: bool = False) -> None:
        self.card = card
        self.fail_after = fail_after  # tokens of a request before it fails (None: never)
        self.fail_on_rank = fail_on_rank  # fail only requests sent to this dp rank
        self.failure = failure  # "output": a finish_reason="error" output; "raise": EngineError
        self.retryable = retryable
        self.down_after_failure = down_after_failure
        self.down = False
        self.received: list[EngineRequest] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def model_card(self) -> ModelCard:
        return self.card

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        self.received.append(copy.deepcopy(request))
        k = request.resumed_output_tokens
        fails = self.fail_after is not None and self.fail_on_rank in (None, request.dp_rank)
        n = request.stop.max_tokens
        for i in range(n):
            if fails and i == self.fail_after:
                self.down = self.down_after_failure
                if self.failure == "raise":
                    raise EngineError("fake: failed", retryable=self.retryable)
                yield EngineOutput(finish_reason="error", error="fake: failed")
                return
            out = EngineOutput(token_ids=[FIRST + k + i], finish_reason="length" if i == n - 1 else None)
            if i == 0:
                out.prompt_tokens, out.cached_tokens = len(request.token_ids), 0
            yield out

    async def abort(self, request_id: str) -> None: ...

    def set_kv_event_sink(self, sink) -> None: ...

    def kv_snapshot(self) -> list:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics(dp_rank=r) for r in range(self.card.dp_size)]

    def healthy(self) -> bool:
        return not self.down


def card(**kw) -> ModelCard:
    return ModelCard(**{"name": "m", "max_model_len": 4096, "block_size": BS, **kw})


def make_pool(*engines: FakeEngine, migration_limit: int = 0, **router_changes) -> InstancePool:
    settings = defaults(ROUTER_OPTIONS).replace(**{"router_mode": "round-robin", **router_changes})
    router = Router(settings, block_size=BS, registry=CollectorRegistry(), model="m", rng=random.Random(0))
    pool = InstancePool("m", router, migration_limit=migration_limit)
    for wid, eng in enumerate(engines):
        pool.add(Instance(wid, eng, eng.card))
    return pool


def request(rid: str = "r", n_prompt: int = 10, max_tokens: int = 8, **kw) -> EngineRequest:
    return EngineRequest(rid, [7 + i for i in range(n_prompt)], SamplingParams(seed=1),
                         StopConditions(max_tokens=max_tokens, min_tokens=2), **kw)


async def run(pool: InstancePool, req: EngineRequest) -> list[EngineOutput]:
    before = copy.deepcopy(req)
    try:
        return [o async for o in pool.generate(req)]
    finally:
        assert req == before, "the pool modified the request it was handed"


def tokens(outs: list[EngineOutput]) -> list[int]:
    return [t for o in outs for t in o.token_ids]


def test_priority_translated_per_engine() -> None:
    vllm_like = ModelCard("m", 128, 16, supports_priority=True)
    sglang_like = ModelCard("m", 128, 16, supports_priority=True, priority_higher_is_urgent=True)
    none = ModelCard("m", 128, 16)
    assert engine_priority(vllm_like, -5) == -5
    assert engine_priority(sglang_like, -5) == 5
    assert engine_priority(none, -5) == 0


@pytest.mark.parametrize("failure", ["output", "raise"])
async def test_migration_continues_without_lost_or_repeated_tokens(failure: str) -> None:
    # Instance 0 (two dp ranks) fails requests on rank 1 after 3 tokens and goes down; instance 1 has rank 0 only.
    urgent_high = dict(supports_priority=True, priority_higher_is_urgent=True)
    bad = FakeEngine(card(dp_size=2, **urgent_high), fail_after=3, fail_on_rank=1, failure=failure,
                     down_after_failure=True)
    good = FakeEngine(card(**urgent_high))
    pool = make_pool(bad, good, migration_limit=2)
    assert tokens(await run(pool, request("warm-up", max_tokens=2))) == [FIRST, FIRST + 1]  # on (0, 0)

    req = request("m", priority=-5)
    outs = await run(pool, req)
    assert tokens(outs) == [FIRST + i for i in range(8)]
    assert outs[-1].finish_reason == "length"
    first, retry = bad.received[-1], good.received[-1]
    assert first.dp_rank == 1 and first.priority == 5
    # the retry is the prompt + the 3 tokens so far, not pinned to the dead instance's rank, priority translated once
    assert retry.token_ids == req.token_ids + [FIRST, FIRST + 1, FIRST + 2]
    assert retry.resumed_output_tokens == 3 and retry.stop.max_tokens == 5 and retry.stop.min_tokens == 0
    assert retry.dp_rank == 0 and retry.worker_id is None and retry.priority == 5
    assert pool.instances[0].consecutive_failures == 1


async def test_client_dp_rank_pin_survives_migration_but_a_worker_pin_does_not() -> None:
    a, b = FakeEngine(card(dp_size=2), fail_after=1), FakeEngine(card(dp_size=2))
    pool = make_pool(a, b, migration_limit=1)
    assert tokens(await run(pool, request("rank", max_tokens=3, dp_rank=1))) == [FIRST, FIRST + 1, FIRST + 2]
    assert [r.dp_rank for r in a.received + b.received] == [1, 1]
    a.received.clear()
    b.received.clear()
    outs = await run(pool, request("pinned", max_tokens=3, worker_id=0, dp_rank=1))
    assert tokens(outs) == [FIRST, FIRST + 1, FIRST + 2]
    # worker 0 failed; its rank 1 meant nothing elsewhere: the retry went wherever the router chose
    assert a.received[0].dp_rank == 1 and b.received[0].worker_id is None


async def test_non_retryable_error_ends_the_request_at_once() -> None:
    bad = FakeEngine(card(), fail_after=2, failure="raise", retryable=False)
    good = FakeEngine(card())
    pool = make_pool(bad, good, migration_limit=3)
    for i in range(pool.FAILURE_THRESHOLD + 1):
        with pytest.raises(EngineError, match="fake: failed") as ei:
            await run(pool, request(f"n{i}", worker_id=0))
        assert not ei.value.retryable
    assert not good.received  # never migrated
    inst = pool.instances[0]
    assert inst.consecutive_failures == 0 and inst.disabled_until == 0.0  # no cooldown


async def test_exhausted_migrations_raise_a_retryable_error() -> None:
    bad = FakeEngine(card(), fail_after=2, failure="raise")
    pool = make_pool(bad, migration_limit=1)
    with pytest.raises(EngineError, match="instance 0 failed") as ei:
        await run(pool, request())
    assert ei.value.retryable and len(bad.received) == 2


ENDPOINT = KvEndpoint("tcp", "127.0.0.1", 9, None)


async def test_disaggregated_prefill_hands_typed_kv_transfer_to_decode() -> None:
    prefill = FakeEngine(card(disaggregation_mode="prefill", kv_endpoint=ENDPOINT, supports_priority=True,
                              priority_higher_is_urgent=True))
    decode = FakeEngine(card(disaggregation_mode="decode", supports_priority=True))
    pool = make_pool(prefill, decode)
    req = request("d", n_prompt=10, priority=-3)
    outs = await run(pool, req)
    assert tokens(outs) == [FIRST + i for i in range(8)] and outs[-1].finish_reason == "length"
    assert outs[0].prompt_tokens == 10 and outs[0].finish_reason is None
    (p,), (d,) = prefill.received, decode.received
    assert p.kv_export_key == "d/0" and p.stop.max_tokens == 1 and p.kv_transfer is None and p.priority == 3
    assert d.kv_transfer == KvTransferParams(ENDPOINT, "d/0", 10 // BS)
    assert d.kv_export_key is None and d.priority == -3
    assert d.token_ids == req.token_ids + [FIRST] and d.resumed_output_tokens == 1 and d.stop.max_tokens == 7


@pytest.mark.parametrize("failure", ["output", "raise"])
async def test_failed_prefill_falls_back_to_local_prefill(failure: str) -> None:
    prefill = FakeEngine(card(disaggregation_mode="prefill", kv_endpoint=ENDPOINT), fail_after=0, failure=failure)
    decode = FakeEngine(card(disaggregation_mode="decode"))
    pool = make_pool(prefill, decode)
    req = request("f")
    assert tokens(await run(pool, req)) == [FIRST + i for i in range(8)]
    (d,) = decode.received
    assert d.kv_transfer is None and d.resumed_output_tokens == 0 and d.token_ids == req.token_ids
    assert d.stop.max_tokens == 8


VLLM_LIKE = KvTransferParams(KvEndpoint("vllm-nixl", "127.0.0.1", 5600, "eng"), "p#0", 3, engine_id="eng",
                             block_ids=((1, 2, 3),), num_tokens=10, first_token_on_decode=True)


class NamingPrefill(FakeEngine):
    """A prefill engine that names its own transfer (as vLLM does) on its final output; or hangs when told."""

    def __init__(self, card: ModelCard, *, hang: bool = False) -> None:
        super().__init__(card)
        self.hang = hang

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        self.received.append(copy.deepcopy(request))
        if self.hang:
            import asyncio

            await asyncio.Event().wait()
        yield EngineOutput(token_ids=[FIRST], finish_reason="length", prompt_tokens=len(request.token_ids),
                           cached_tokens=0, kv_transfer=VLLM_LIKE)


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"model": "m", **labels}) or 0.0


async def test_engine_named_transfer_reaches_decode_which_computes_the_first_token() -> None:
    from dynamo_mono.metrics import FrontendMetrics

    prefill = NamingPrefill(card(disaggregation_mode="prefill"))
    decode = FakeEngine(card(disaggregation_mode="decode"))
    pool = make_pool(prefill, decode)
    pool.metrics = FrontendMetrics()
    req = request("v", n_prompt=10)
    outs = await run(pool, req)
    # The prefill's token is not streamed: decode regenerates it from the pulled prompt KV (the whole output).
    assert tokens(outs) == [FIRST + i for i in range(8)]
    (d,) = decode.received
    assert d.kv_transfer == VLLM_LIKE and d.token_ids == req.token_ids and d.resumed_output_tokens == 0
    assert d.stop.max_tokens == 8
    assert _metric(pool.metrics.registry, "dynamo_frontend_disagg_remote_prefills_total") == 1


async def test_decode_death_after_handoff_migrates_without_the_transfer() -> None:
    prefill = NamingPrefill(card(disaggregation_mode="prefill"))
    bad = FakeEngine(card(disaggregation_mode="decode"), fail_after=3, down_after_failure=True)
    good = FakeEngine(card(disaggregation_mode="decode"))
    pool = make_pool(prefill, bad, good, migration_limit=1)
    outs = await run(pool, request("m", n_prompt=10))
    assert tokens(outs) == [FIRST + i for i in range(8)]
    (first,), (second,) = bad.received, good.received
    assert first.kv_transfer == VLLM_LIKE
    # The migrated attempt prefills prompt + tokens so far locally: the prefill instance's blocks may be gone.
    assert second.kv_transfer is None and second.resumed_output_tokens == 3


async def test_prefill_timeout_falls_back_to_local_prefill_and_counts_it() -> None:
    from dynamo_mono.metrics import FrontendMetrics

    prefill = NamingPrefill(card(disaggregation_mode="prefill"), hang=True)
    decode = FakeEngine(card(disaggregation_mode="decode"))
    pool = make_pool(prefill, decode)
    pool.metrics = FrontendMetrics()
    pool.disagg_prefill_timeout = 0.01  # the prefill never answers: any limit expires
    assert tokens(await run(pool, request("t"))) == [FIRST + i for i in range(8)]
    (d,) = decode.received
    assert d.kv_transfer is None
    reg = pool.metrics.registry
    assert _metric(reg, "dynamo_frontend_disagg_local_prefill_fallbacks_total", reason="timeout") == 1
    assert _metric(reg, "dynamo_frontend_disagg_remote_prefills_total") == 0


def test_card_rejects_an_unknown_disaggregation_mode() -> None:
    with pytest.raises(ValueError, match="disaggregation_mode 'both'"):
        card(disaggregation_mode="both")


@pytest.mark.parametrize("track", [True, False])
async def test_output_tokens_grow_active_decode_blocks_only_when_tracked(track: bool) -> None:
    pool = make_pool(FakeEngine(card()), router_track_output_blocks=track)
    stream = pool.generate(request("t", n_prompt=8, max_tokens=9))  # 8 prompt tokens: 2 blocks of 4
    seen = []
    async for _ in stream:
        seen.append(pool.router.load()[(0, 0)]["active_decode_blocks"])
        if len(seen) == 8:  # 8 + 8 tokens: 4 blocks
            break
    await stream.aclose()
    assert seen[0] == (3 if track else 2) and seen[-1] == (4 if track else 2)
    assert pool.router.load()[(0, 0)]["active_decode_blocks"] == 0


def test_blocks_needed_counts_the_first_generated_token() -> None:
    assert kv_blocks_needed(63, 64) == 1 and kv_blocks_needed(64, 64) == 2 and kv_blocks_needed(3487, 64) == 55


async def test_prompt_that_can_never_fit_is_rejected_before_routing() -> None:
    small, big = FakeEngine(card(total_kv_blocks=4)), FakeEngine(card(total_kv_blocks=48, dp_size=2))
    pool = make_pool(small, big)
    with pytest.raises(ContextLengthExceeded) as ei:
        pool.preflight(request(n_prompt=48 * BS))
    err = ei.value
    assert to_api_error(err).status == 400 and err.code == "context_length_exceeded" and err.param == "messages"
    assert "needs 49 KV blocks" in err.message and "largest instance holds 48" in err.message
    pool.preflight(request(n_prompt=48 * BS - 1))
    with pytest.raises(ContextLengthExceeded, match="needs 49 KV blocks"):  # a caller that skipped preflight
        await run(pool, request(n_prompt=48 * BS))
    assert not small.received and not big.received
    # fits only the big instance: never routed to the small one, even round-robin
    for i in range(3):
        assert len(tokens(await run(pool, request(f"b{i}", n_prompt=4 * BS, max_tokens=2)))) == 2
    assert not small.received and len(big.received) == 3
    # a pin to an instance too small for it is a 400 too
    with pytest.raises(ContextLengthExceeded, match="needs 5 KV blocks"):
        pool.preflight(request(n_prompt=4 * BS, worker_id=0))
    # unknown capacity is never rejected
    make_pool(FakeEngine(card())).preflight(request(n_prompt=100_000))


async def test_check_fits_agrees_with_the_mocker() -> None:
    """The issue's case: --num-gpu-blocks-override 48 --block-size 64 and a 3,487-token prompt."""
    from tests.mocker.conftest import make_args
    from mocker.engine import MockerEngine

    eng = MockerEngine(make_args(num_gpu_blocks_override=48, block_size=64))
    settings = defaults(ROUTER_OPTIONS)
    pool = InstancePool("m", Router(settings, block_size=64, registry=CollectorRegistry(), model="m"))
    pool.add(Instance(0, eng, eng.model_card()))
    with pytest.raises(ContextLengthExceeded, match="needs 55 KV blocks of 64 tokens but the largest instance holds 48"):
        pool.check_fits(3487)
    longest = 48 * 64 - 1  # the longest prompt that fits: the mocker serves it
    pool.preflight(request(n_prompt=longest, max_tokens=2))
    assert len(tokens(await run(pool, request(n_prompt=longest, max_tokens=2)))) == 2
    with pytest.raises(ContextLengthExceeded, match="needs 49 KV blocks"):
        pool.check_fits(longest + 1)
    with pytest.raises(EngineError, match="needs more than 48 KV blocks"):  # what the mocker would have said
        [o async for o in eng.generate(request(n_prompt=longest + 1))]


def test_continuation_of_a_resumed_request_counts_all_tokens() -> None:
    pool = make_pool(FakeEngine(card()))
    again = pool._continuation(replace(request(), resumed_output_tokens=2), [1, 2, 3])
    assert again.resumed_output_tokens == 5 and again.stop.max_tokens == 5


# --- embeddings ------------------------------------------------------------------------------------------------
class FakeEmbedder(FakeEngine):
    """Embeds input i as a vector filled with (worker tag + i); fails as told."""

    def __init__(self, tag: float, *, fails: int = 0, retryable: bool = True, wrong_shape: bool = False,
                 **card_kw) -> None:
        super().__init__(card(kind="embedding", embedding_dim=4, **card_kw))
        self.tag = tag
        self.fails = fails  # the next `fails` calls raise
        self.retryable_failure = retryable
        self.wrong_shape = wrong_shape
        self.embedded: list[EmbeddingRequest] = []

    async def embed(self, request: EmbeddingRequest) -> EmbeddingOutput:
        self.embedded.append(copy.deepcopy(request))
        if self.fails:
            self.fails -= 1
            raise EngineError("fake: embed failed", retryable=self.retryable_failure)
        dim = 3 if self.wrong_shape else (request.dimensions or 4)
        vectors = np.array([[self.tag + i] * dim for i in range(len(request.token_ids))], dtype=np.float32)
        return EmbeddingOutput(vectors, sum(map(len, request.token_ids)))


def embedding_request(rid: str = "e", **kw) -> EmbeddingRequest:
    return EmbeddingRequest(rid, [[1, 2, 3], [4, 5]], **kw)


async def test_embed_retries_a_retryable_failure_on_another_instance() -> None:
    bad, good = FakeEmbedder(10.0, fails=1, supports_priority=True), FakeEmbedder(20.0)
    pool = make_pool(bad, good, migration_limit=1)
    req = embedding_request(priority=-3, dimensions=2)
    before = copy.deepcopy(req)
    out = await pool.embed(req)
    assert req == before, "the pool modified the request it was handed"
    assert out.embeddings.tolist() == [[20.0, 20.0], [21.0, 21.0]] and out.prompt_tokens == 5
    assert bad.embedded[0].priority == -3 and good.embedded[0].priority == 0  # each engine's own convention
    assert bad.embedded[0].dp_rank == 0 and pool.instances[0].consecutive_failures == 1
    assert not pool.router.load()[(1, 0)]["active_requests"]  # finished on the router too


async def test_embed_failure_without_migrations_left_is_retryable_error() -> None:
    pool = make_pool(FakeEmbedder(1.0, fails=1), FakeEmbedder(2.0))
    with pytest.raises(EngineError) as e:
        await pool.embed(embedding_request())
    assert e.value.retryable and to_api_error(e.value).status == 503


async def test_embed_non_retryable_failure_is_not_retried() -> None:
    first, second = FakeEmbedder(1.0, fails=1, retryable=False), FakeEmbedder(2.0)
    pool = make_pool(first, second, migration_limit=3)
    with pytest.raises(EngineError) as e:
        await pool.embed(embedding_request())
    assert not e.value.retryable and len(first.embedded) == 1 and second.embedded == []


async def test_embed_answer_of_the_wrong_shape_is_an_engine_bug() -> None:
    pool = make_pool(FakeEmbedder(1.0, wrong_shape=True), migration_limit=2)
    with pytest.raises(EngineError, match=r"shape \(2, 3\); expected \(2, 4\)") as e:
        await pool.embed(embedding_request())
    assert not e.value.retryable


async def test_embed_batch_fits_input_by_input() -> None:
    # 4 KV blocks of 4 tokens: a 20-token input can never fit, but a batch of small inputs with more tokens can.
    pool = make_pool(FakeEmbedder(1.0, total_kv_blocks=4))
    small = EmbeddingRequest("s", [[1] * 10] * 5)
    assert (await pool.embed(small)).embeddings.shape == (5, 4)
    with pytest.raises(ContextLengthExceeded):
        pool.preflight(EmbeddingRequest("l", [[1] * 3, [1] * 20]))
