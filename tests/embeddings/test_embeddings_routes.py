"""POST /v1/embeddings in-process on the mocker: shapes, encodings, dimensions, truncation, errors, request path."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from tests.embeddings.conftest import DIM, EMB, EmbServer, MakeEmbServer, b64_vector, cosine
from tests.openai.conftest import assert_envelope, wait_until

pytestmark = pytest.mark.timeout(30)


async def test_float_response_shape_and_usage(emb_server: EmbServer) -> None:
    texts = ["The quick brown fox", "jumps over the lazy dog"]
    status, body = await emb_server.embed({"input": texts})
    assert status == 200
    assert body["object"] == "list" and body["model"] == EMB and re.fullmatch(r"embd-\S+", body["id"])
    assert [d["index"] for d in body["data"]] == [0, 1] and {d["object"] for d in body["data"]} == {"embedding"}
    vecs = np.array([d["embedding"] for d in body["data"]])
    assert vecs.shape == (2, DIM)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    n = sum(len(emb_server.tokens(t)) for t in texts)
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}


async def test_the_four_input_shapes_agree(emb_server: EmbServer) -> None:
    text = "retrieval augmented generation"
    ids = emb_server.tokens(text)
    one = await emb_server.vectors(text)
    assert one.shape == (1, DIM)
    np.testing.assert_array_equal(await emb_server.vectors([text, text]), np.vstack([one, one]))
    np.testing.assert_array_equal(await emb_server.vectors(ids), one)  # one token-id list = one input
    np.testing.assert_array_equal((await emb_server.vectors([ids, ids[:3]]))[0], one[0])


@pytest.mark.parametrize("dimensions", [None, 5, 6])  # rows of 1536, 20 and 24 bytes: aligned to 3 or not
async def test_base64_decodes_to_the_float_vectors(emb_server: EmbServer, dimensions: int | None) -> None:
    texts = ["alpha beta", "gamma delta epsilon", "zeta"]
    floats = await emb_server.vectors(texts, dimensions=dimensions)
    status, body = await emb_server.embed({"input": texts, "encoding_format": "base64", "dimensions": dimensions})
    assert status == 200
    decoded = np.array([b64_vector(d["embedding"]) for d in body["data"]])
    np.testing.assert_array_equal(decoded, floats)


async def test_dimensions_truncate_and_renormalise(emb_server: EmbServer) -> None:
    full = (await emb_server.vectors("a matryoshka doll"))[0]
    short = (await emb_server.vectors("a matryoshka doll", dimensions=32))[0]
    assert short.shape == (32,)
    np.testing.assert_allclose(short, full[:32] / np.linalg.norm(full[:32]), atol=1e-6)
    same = (await emb_server.vectors("a matryoshka doll", dimensions=DIM))[0]
    np.testing.assert_array_equal(same, full)


@pytest.mark.parametrize("payload, param, fragment", [
    ({"input": ""}, "input", "input[0] is empty"),
    ({"input": []}, "input", "must not be an empty list"),
    ({"input": ["ok", ""]}, "input", "input[1] is empty"),
    ({"input": [[1, 2], []]}, "input", "input[1] is empty"),
    ({"input": [1, -2]}, "input", "token ids must be >= 0"),
    ({"input": [[5], [10 ** 9]]}, "input", "input[1] has a token id out of range"),
    ({"input": "x", "dimensions": DIM + 1}, "dimensions", f"larger than the {DIM} dimensions"),
    ({"input": "x", "dimensions": 0}, "dimensions", ""),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format", ""),
    ({"input": "x", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens", ""),
    ({"input": "x", "logprobs": True}, "logprobs", ""),
    ({"input": 5}, "input", ""),
])
async def test_bad_requests_are_400_naming_the_field(emb_server: EmbServer, payload: dict, param: str,
                                                      fragment: str) -> None:
    status, body = await emb_server.embed(payload)
    assert status == 400, body
    err = assert_envelope(body, 400)
    assert err["param"] == param and fragment in err["message"]


async def test_dimensions_on_a_model_without_matryoshka_is_400(make_emb_server: MakeEmbServer) -> None:
    server = await make_emb_server(embedding_matryoshka=False, embedding_dim=64)
    assert (await server.vectors("x")).shape == (1, 64)
    status, body = await server.embed({"input": "x", "dimensions": 16})
    assert status == 400 and "not a Matryoshka model" in assert_envelope(body, 400)["message"]


async def test_over_long_input_is_400_naming_it_unless_truncated(make_emb_server: MakeEmbServer) -> None:
    server = await make_emb_server(max_model_len=32)
    long_ids = list(range(10, 50))  # 40 tokens > 32
    status, body = await server.embed({"input": [[1, 2, 3], long_ids]})
    assert status == 400
    err = assert_envelope(body, 400)
    assert err["code"] == "context_length_exceeded" and "input[1] has 40 tokens" in err["message"]
    # truncate_prompt_tokens keeps the last k tokens of each input
    status, body = await server.embed({"input": [[1, 2, 3], long_ids], "truncate_prompt_tokens": 8})
    assert status == 200 and body["usage"]["prompt_tokens"] == 3 + 8
    tail = await server.vectors([long_ids[-8:]])
    np.testing.assert_array_equal(np.array(body["data"][1]["embedding"], dtype=np.float32), tail[0])
    # -1: as many as the context holds
    status, body = await server.embed({"input": [long_ids], "truncate_prompt_tokens": -1})
    assert status == 200 and body["usage"]["prompt_tokens"] == 32


async def test_too_many_inputs_is_400(make_emb_server: MakeEmbServer) -> None:
    server = await make_emb_server(max_embedding_inputs=3)
    assert (await server.vectors(["a", "b", "c"])).shape == (3, DIM)
    status, body = await server.embed({"input": ["a", "b", "c", "d"]})
    assert status == 400 and "server limit of 3" in assert_envelope(body, 400)["message"]


async def test_chat_routes_refuse_an_embedding_model(emb_server: EmbServer) -> None:
    for path, payload in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                          ("/v1/completions", {"prompt": "hi"})):
        r = await emb_server.client.post(path, json={"model": EMB, **payload})
        assert r.status == 400
        assert "is an embedding model" in assert_envelope(await r.json(), 400)["message"]
    status, body = await emb_server.embed({"model": "nope", "input": "x"})
    assert status == 404 and assert_envelope(body, 404)["code"] == "model_not_found"


async def test_similar_texts_are_closer_than_unrelated_ones(emb_server: EmbServer) -> None:
    docs = ["The cat sat on the warm mat by the fire.",
            "Stock markets fell sharply on Monday after the jobs report.",
            "Preheat the oven and knead the sourdough bread dough.",
            "The rocket launched its satellite into a low Earth orbit."]
    queries = ["A cat was sitting on the mat near the fire.",
               "Markets dropped sharply Monday following the report on jobs.",
               "How to knead sourdough dough and preheat the oven",
               "Satellite launched into low Earth orbit by a rocket"]
    d = await emb_server.vectors(docs)
    q = await emb_server.vectors(queries)
    sims = q @ d.T
    assert list(sims.argmax(axis=1)) == [0, 1, 2, 3]  # each query retrieves its own document
    for i in range(4):
        assert sims[i, i] > max(sims[i, j] for j in range(4) if j != i) + 0.1
    assert cosine(d[0], d[0]) == pytest.approx(1.0, abs=1e-5)


async def test_batches_are_routed_over_instances_and_keep_input_order(make_emb_server: MakeEmbServer) -> None:
    server = await make_emb_server(num_instances=2, router_mode="round-robin", embedding_batch_size=3)
    texts = [f"input number {i} about topic {i % 4}" for i in range(10)]
    batched = await server.vectors(texts)
    one_by_one = np.vstack([await server.vectors(t) for t in texts])
    np.testing.assert_array_equal(batched, one_by_one)
    engines = [inst.engine for inst in server.state.models[EMB].pool.instances.values()]
    steps = [sum(e.steps for e in eng.embedders) for eng in engines]
    assert all(s > 0 for s in steps), steps  # 4 batches of <= 3, round-robin: both instances served some
    metrics = await (await server.client.get("/metrics")).text()
    assert re.search(r'dynamo_frontend_requests_total\{endpoint="embeddings",error_type="",model="emb",'
                     r'request_type="unary",status="success"\} 11\.0', metrics)


async def test_openai_sdk_float_and_base64(emb_server: EmbServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=str(emb_server.client.make_url("/v1")), api_key="x", max_retries=0)
    texts = ["first input", "second input", "a third one"]
    as_float = await client.embeddings.create(model=EMB, input=texts, encoding_format="float")
    as_b64 = await client.embeddings.create(model=EMB, input=texts, encoding_format="base64")
    default = await client.embeddings.create(model=EMB, input=texts)  # the SDK asks for base64 and decodes it
    f = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    assert f.shape == (3, DIM) and as_float.usage.prompt_tokens == as_float.usage.total_tokens > 0
    b = np.array([b64_vector(d.embedding) if isinstance(d.embedding, str) else d.embedding for d in as_b64.data],
                 dtype=np.float32)
    np.testing.assert_array_equal(b, f)
    np.testing.assert_array_equal(np.array([d.embedding for d in default.data], dtype=np.float32), f)
    short = await client.embeddings.create(model=EMB, input="first input", dimensions=8, encoding_format="float")
    assert len(short.data[0].embedding) == 8
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model=EMB, input="x", dimensions=DIM * 2)
    await client.close()


async def test_request_timeout_is_504(make_emb_server: MakeEmbServer) -> None:
    # A step of the mocker's timing model takes ~2 ms / 1e-6 = ~2000 s here: only the timeout can end it.
    server = await make_emb_server(speedup_ratio=1e-6, request_timeout=0.2)
    status, body = await server.embed({"input": "slow"})
    assert status == 504 and assert_envelope(body, 504)["code"] == "request_timeout"
    await wait_until(lambda: server.state.inflight == 0, "the timed-out request left")
    engine = next(iter(server.state.models[EMB].pool.instances.values())).engine
    await wait_until(lambda: engine.embedders[0].waiting == 0 and not engine.embedders[0].jobs,
                     "the engine dropped the abandoned inputs")


async def test_admission_full_queue_is_429_and_slots_are_released(make_emb_server: MakeEmbServer) -> None:
    server = await make_emb_server(speedup_ratio=1e-6, max_inflight_requests=1, max_queue_length=0)
    first = asyncio.ensure_future(server.embed({"input": "holds the only slot"}))
    await wait_until(lambda: server.state.admission.active == 1, "the first request admitted")
    status, body = await server.embed({"input": "second"})
    assert status == 429 and assert_envelope(body, 429)["type"] == "rate_limit_error"
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await wait_until(lambda: server.state.admission.active == 0 and server.state.inflight == 0, "slot released")
