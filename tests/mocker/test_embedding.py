"""The mocker's embedding models: deterministic unit vectors, similarity, Matryoshka, step budgets, failures."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import EmbeddingRequest, EngineError
from mocker.embedding import HashedEmbedder
from mocker.engine import MockerEngine
from tests.mocker.conftest import make_args, make_request

pytestmark = pytest.mark.timeout(10)


def embedding_engine(**options) -> MockerEngine:
    args = make_args(**options)
    args.kind = "embedding"
    return MockerEngine(args)


def ids(text: str) -> list[int]:
    return list(text.encode())


def test_vectors_are_deterministic_unit_norm_and_put_similar_texts_close() -> None:
    a, b = HashedEmbedder(128), HashedEmbedder(128)
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quarterly revenue grew by ten percent"]
    va, vb = a.embed([ids(t) for t in texts]), b.embed([ids(t) for t in texts])
    np.testing.assert_array_equal(va, vb)  # same dimension = same projection, in any instance or process
    assert va.dtype == np.float32 and va.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, atol=1e-6)
    sims = va @ va.T
    assert sims[0, 1] > 0.7 and sims[0, 1] > sims[0, 2] + 0.4
    np.testing.assert_array_equal(a.embed([ids("x")]), a.embed([ids("x")]))  # single-token input


def test_dimensions_are_a_truncated_renormalised_prefix() -> None:
    e = HashedEmbedder(64)
    full, short = e.embed([ids("hello world")]), e.embed([ids("hello world")], 16)
    np.testing.assert_allclose(short[0], full[0, :16] / np.linalg.norm(full[0, :16]), atol=1e-6)


async def test_embed_returns_rows_in_order_and_counts_tokens() -> None:
    eng = embedding_engine(embedding_dim=32)
    await eng.start()
    try:
        card = eng.model_card()
        assert (card.kind, card.embedding_dim, card.matryoshka, card.kv_events) == ("embedding", 32, True, False)
        inputs = [ids("first"), ids("second one"), ids("3")]
        out = await eng.embed(EmbeddingRequest("r", inputs))
        assert out.embeddings.shape == (3, 32) and out.prompt_tokens == sum(map(len, inputs))
        np.testing.assert_array_equal(out.embeddings, HashedEmbedder(32).embed(inputs))
        short = await eng.embed(EmbeddingRequest("s", inputs, dimensions=8))
        np.testing.assert_allclose(short.embeddings, HashedEmbedder(32).embed(inputs, 8), atol=1e-6)
    finally:
        await eng.stop()


async def test_steps_respect_the_seq_token_and_block_budgets() -> None:
    eng = embedding_engine(max_num_seqs=2, max_num_batched_tokens=100, block_size=4, num_gpu_blocks_override=64)
    sched = eng.embedders[0]
    out = await eng.embed(EmbeddingRequest("r", [[1] * 10] * 5))  # 5 inputs, 2 per step
    assert out.embeddings.shape[0] == 5 and sched.steps == 3
    sched.steps = 0
    await eng.embed(EmbeddingRequest("t", [[1] * 60, [1] * 60, [1] * 150]))  # token budget 100; 150 runs alone
    assert sched.steps == 3
    await eng.stop()


async def test_concurrent_requests_share_steps() -> None:
    eng = embedding_engine(max_num_seqs=8)
    outs = await asyncio.gather(*(eng.embed(EmbeddingRequest(f"r{i}", [[i + 1] * 3] * 2)) for i in range(4)))
    assert eng.embedders[0].steps == 1 and all(o.embeddings.shape == (2, 384) for o in outs)
    await eng.stop()


async def test_a_cancelled_request_leaves_the_queue() -> None:
    eng = embedding_engine(speedup_ratio=1e-6)  # a step takes ~2000 s: nothing finishes by itself
    task = asyncio.ensure_future(eng.embed(EmbeddingRequest("r", [[1, 2]] * 3)))
    sched = eng.embedders[0]
    while sched.running == 0:
        await asyncio.sleep(0)
    assert eng.load_metrics()[0].running == 3
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert not sched.jobs and sched.waiting == 0
    await eng.stop()


@pytest.mark.parametrize("request_kw, fragment", [
    ({"token_ids": []}, "no inputs"),
    ({"token_ids": [[1], []]}, "input 1 is empty"),
    ({"token_ids": [[1] * 9000]}, "input 0 has 9000 tokens"),
    ({"token_ids": [[1]], "dimensions": 999}, "dimensions=999 must be between 1 and the model's 384"),
])
async def test_requests_it_cannot_serve_are_not_retryable(request_kw: dict, fragment: str) -> None:
    eng = embedding_engine()
    with pytest.raises(EngineError, match=fragment) as e:
        await eng.embed(EmbeddingRequest("r", **request_kw))
    assert not e.value.retryable


async def test_stopped_instance_fails_pending_requests_retryably() -> None:
    eng = embedding_engine(speedup_ratio=1e-6)
    task = asyncio.ensure_future(eng.embed(EmbeddingRequest("r", [[1, 2]])))
    while eng.embedders[0].running == 0:
        await asyncio.sleep(0)
    await eng.stop()
    with pytest.raises(EngineError, match="engine stopped") as e:
        await task
    assert e.value.retryable
    with pytest.raises(EngineError, match="instance is down"):
        await eng.embed(EmbeddingRequest("s", [[1]]))


async def test_each_kind_refuses_the_other_request_kind() -> None:
    with pytest.raises(EngineError, match="serves an embedding model; it does not generate") as e:
        async for _ in embedding_engine().generate(make_request()):
            pass
    assert not e.value.retryable
    chat = MockerEngine(make_args())
    with pytest.raises(EngineError, match="serves a chat model, not embeddings"):
        await chat.embed(EmbeddingRequest("r", [[1]]))


def test_no_dimensions_when_matryoshka_is_off() -> None:
    eng = embedding_engine(embedding_matryoshka=False)
    assert eng.model_card().matryoshka is False
    assert "does not support `dimensions`" in eng._reject_embedding(EmbeddingRequest("r", [[1]], dimensions=4))


@pytest.mark.parametrize("kind, options, fragment", [
    ("embedding", {"enable_prefix_caching": False}, "--enable-prefix-caching=False does not apply"),
    ("embedding", {"mocker_fail_after": 3}, "--mocker-fail-after=3 does not apply"),
    ("chat", {"embedding_matryoshka": False}, "--embedding-matryoshka=False does not apply to the mocker's chat"),
])
def test_options_of_the_other_kind_are_refused(kind: str, options: dict, fragment: str) -> None:
    args = make_args(**options)
    args.kind = kind
    with pytest.raises(ConfigError, match=fragment):
        MockerEngine(args)
