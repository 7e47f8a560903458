"""LoRA management routes (Dynamo's and vLLM's), adapters as models, bad sources, rollback and concurrency."""

from __future__ import annotations

import asyncio

import pytest

from dynamo_mono.engine import EngineError
from tests.lora.conftest import MODEL, state_of


async def _load(client, name: str, path: str, **extra):
    return await client.post("/v1/loras", json={"lora_name": name, "source": {"uri": path}, **extra})


async def _chat(client, model: str, **extra):
    return await client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4, **extra})


async def test_round_trip(client, adapter) -> None:
    path = adapter("a1")
    r = await _load(client, "a1", "file://" + path)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body == {"status": "success", "message": "LoRA adapter 'a1' loaded successfully", "lora_name": "a1",
                    "lora_id": body["lora_id"]}
    r = await client.get("/v1/loras")
    listed = await r.json()
    assert listed["loras"] == {"a1": body["lora_id"]} and listed["count"] == 1 and listed["status"] == "success"
    assert len(listed["instances"]["a1"]) == 2
    models = {m["id"]: m for m in (await (await client.get("/v1/models")).json())["data"]}
    assert models["a1"]["parent"] == MODEL and "parent" not in models[MODEL]
    r = await _chat(client, "a1")
    assert r.status == 200, await r.text()
    assert (await r.json())["model"] == "a1"
    r = await client.post("/v1/completions", json={"model": "a1", "prompt": "hi", "max_tokens": 2})
    assert r.status == 200, await r.text()
    r = await client.post("/v1/messages", json={"model": "a1", "max_tokens": 2,
                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200, await r.text()
    r = await client.post("/v1/responses", json={"model": "a1", "input": "hi", "max_output_tokens": 2})
    assert r.status == 200, await r.text()
    assert (await r.json())["model"] == "a1"
    metrics = await (await client.get("/metrics")).text()
    assert 'model="a1"' in metrics
    r = await client.delete("/v1/loras/a1")
    assert r.status == 200 and (await r.json())["lora_id"] == body["lora_id"]
    r = await _chat(client, "a1")
    assert r.status == 404
    assert (await client.delete("/v1/loras/a1")).status == 404
    st = state_of(client)
    assert all(i.engine.list_loras() == [] for i in st.models[MODEL].pool.instances.values())


async def test_lora_id_is_dynamos(client, adapter) -> None:
    r = await _load(client, "test_lora", adapter("test_lora"))
    assert (await r.json())["lora_id"] == 1983627077


async def test_engine_request_carries_adapter_and_seeded_hashes(client, adapter) -> None:
    await _load(client, "a1", adapter("a1"))
    st = state_of(client)
    seen = []
    for inst in st.models[MODEL].pool.instances.values():
        orig = inst.engine.generate

        def spy(req, _orig=orig):
            seen.append(req)
            return _orig(req)
        inst.engine.generate = spy
    long = "word " * 200
    for model in (MODEL, "a1"):
        r = await client.post("/v1/completions", json={"model": model, "prompt": long, "max_tokens": 1})
        assert r.status == 200
    base, lora = seen
    assert base.lora_name is None and lora.lora_name == "a1"
    assert base.token_ids == lora.token_ids and base.block_hashes
    assert not set(base.block_hashes) & set(lora.block_hashes)  # never a prefix hit across adapters


async def test_twenty_parallel_loads_load_once(client, adapter) -> None:
    path = adapter("a1")
    st = state_of(client)
    rs = await asyncio.gather(*(_load(client, "a1", path) for _ in range(20)))
    assert all(r.status == 200 for r in rs)
    msgs = [(await r.json())["message"] for r in rs]
    assert sum("loaded successfully" in m for m in msgs) == 1
    assert st.loras.engine_loads == 2  # one load per instance (2 instances), once


@pytest.mark.parametrize("case, reason", [
    ("missing", "is not a directory"),
    ("noconfig", "no adapter_config.json"),
    ("noweights", "no adapter_model.safetensors"),
    ("rank", "exceeds --max-lora-rank 16"),
    ("base", "was trained for base model 'org/other-model'"),
    ("s3", "scheme 's3' is not supported"),
])
async def test_bad_sources_are_400(client, adapter, tmp_path, case, reason) -> None:
    src = {"missing": lambda: str(tmp_path / "nope"),
           "noconfig": lambda: adapter("x", config=False),
           "noweights": lambda: adapter("x", weights=False),
           "rank": lambda: adapter("x", rank=64),
           "base": lambda: adapter("x", base="org/other-model"),
           "s3": lambda: "s3://bucket/adapter"}[case]()
    r = await _load(client, "x", src)
    assert r.status == 400, await r.text()
    body = await r.json()
    assert body["status"] == "error" and reason in body["message"], body
    assert (await (await client.get("/v1/loras")).json())["count"] == 0
    assert "x" not in state_of(client).models


async def test_failed_load_on_one_instance_rolls_back(client, adapter) -> None:
    st = state_of(client)
    insts = list(st.models[MODEL].pool.instances.values())

    async def broken(_adapter):
        raise EngineError("device out of memory")
    insts[1].engine.load_lora = broken
    r = await _load(client, "a1", adapter("a1"))
    assert r.status == 500, await r.text()
    assert "device out of memory" in (await r.json())["message"]
    assert insts[0].engine.list_loras() == []
    assert "a1" not in st.models and st.loras.list() == {}


async def test_vllm_routes(client, adapter) -> None:
    path = adapter("v1")
    r = await client.post("/v1/load_lora_adapter", json={"lora_name": "v1", "lora_path": path})
    assert r.status == 200 and await r.text() == "Success: LoRA adapter 'v1' added successfully."
    r = await client.post("/v1/load_lora_adapter", json={"lora_name": "v1", "lora_path": path})
    assert r.status == 400 and "already been loaded" in await r.text()
    r = await client.post("/v1/load_lora_adapter", json={"lora_name": "v2", "lora_path": path,
                                                           "load_inplace": True})
    assert r.status == 400
    r = await client.post("/v1/unload_lora_adapter", json={"lora_name": "v1", "lora_int_id": 5})
    assert r.status == 400
    r = await client.post("/v1/unload_lora_adapter", json={"lora_name": "v1"})
    assert r.status == 200 and await r.text() == "Success: LoRA adapter 'v1' removed successfully."
    r = await client.post("/v1/unload_lora_adapter", json={"lora_name": "v1"})
    assert r.status == 404


async def test_admin_key(make_client, adapter) -> None:
    client = await make_client(lora_admin_key="sekret")
    path = adapter("a1")
    assert (await _load(client, "a1", path)).status == 401
    r = await client.post("/v1/loras", json={"lora_name": "a1", "source": {"uri": path}},
                          headers={"Authorization": "Bearer sekret"})
    assert r.status == 200
    assert (await client.post("/v1/unload_lora_adapter", json={"lora_name": "a1"})).status == 401


async def test_name_of_a_model_is_refused(client, adapter) -> None:
    r = await _load(client, MODEL, adapter("a1"))
    assert r.status == 400 and "already the name of a served model" in (await r.json())["message"]


async def test_load_while_serving_and_unload_waits_for_streams(client, adapter) -> None:
    await _load(client, "a1", adapter("a1"))
    st = state_of(client)
    pool = st.models["a1"].pool
    gate = asyncio.Event()  # holds the adapter's stream after its first output, whatever the machine's speed
    for inst in st.models[MODEL].pool.instances.values():
        orig = inst.engine.generate

        async def held(req, _orig=orig):
            first = True
            async for out in _orig(req):
                yield out
                if first and req.lora_name == "a1":
                    first = False
                    await gate.wait()
        inst.engine.generate = held
    resp = await client.post("/v1/chat/completions", json={
        "model": "a1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True,
        "ignore_eos": True})
    assert resp.status == 200
    await resp.content.readline()
    assert pool.active == 1
    # Loading another adapter while it serves.
    assert (await _load(client, "a2", adapter("a2"))).status == 200
    unload = asyncio.ensure_future(client.delete("/v1/loras/a1"))
    while "a1" in st.models:  # out of routing first (the hang guard is the test timeout)
        await asyncio.sleep(0)
    assert (await _chat(client, "a1")).status == 404
    assert not unload.done()  # waiting for the held stream
    assert all(i.engine.list_loras() for i in st.models[MODEL].pool.instances.values())
    gate.set()
    body = await resp.text()  # the stream finishes whole
    assert body.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in body
    r = await unload
    assert r.status == 200
    assert all(i.engine.list_loras() == ["a2"] for i in st.models[MODEL].pool.instances.values())
