"""Adapter routing: replica sets (HRW), instances leaving and joining, load-based growth, KV isolation, restart."""

from __future__ import annotations

from dynamo_mono.block_hash import block_hashes, lora_seed
from dynamo_mono.lora.placement import replica_set
from dynamo_mono.serving.pool import Instance
from tests.lora.conftest import MODEL, state_of


async def _load(client, name: str, path: str):
    r = await client.post("/v1/loras", json={"lora_name": name, "source": {"uri": path}})
    assert r.status == 200, await r.text()


def _spy(st) -> list:
    seen = []
    for inst in st.models[MODEL].pool.instances.values():
        orig = inst.engine.generate

        def spy(req, _orig=orig, _wid=inst.worker_id):
            seen.append((_wid, req))
            return _orig(req)
        inst.engine.generate = spy
    return seen


async def test_replica_set_routing_and_membership(make_client, adapter) -> None:
    client = await make_client(num_instances=4, lora_replica_factor=1)
    st = state_of(client)
    base = st.models[MODEL]
    keys = [k for i in base.pool.instances.values() for k in i.keys()]
    await _load(client, "a1", adapter("a1"))
    home = replica_set("a1", keys, 1)[0]
    ad = st.loras.adapters["a1"]
    assert ad.loaded == {home[0]}
    holders = [i.worker_id for i in base.pool.instances.values() if i.engine.list_loras() == ["a1"]]
    assert holders == [home[0]]
    seen = _spy(st)
    for _ in range(6):
        r = await client.post("/v1/completions", json={"model": "a1", "prompt": "hi", "max_tokens": 1})
        assert r.status == 200
    assert {w for w, _ in seen} == {home[0]}
    # The home instance leaves: the adapter moves to HRW's next choice, and only there.
    gone = base.pool.remove(home[0])
    await st.loras.reconcile()
    nxt = replica_set("a1", [k for k in keys if k[0] != home[0]], 1)[0]
    assert ad.loaded == {nxt[0]} and st.models["a1"].pool.keys == {nxt}
    # It joins again: the adapter moves back and the stand-in forgets it.
    base.add_instance(Instance(worker_id=gone.worker_id, engine=gone.engine, card=gone.card))
    await st.loras.reconcile()
    assert ad.loaded == {home[0]} and st.models["a1"].pool.keys == {home}
    assert base.pool.instances[nxt[0]].engine.list_loras() == []


async def test_hot_adapter_grows_and_shrinks(make_client, adapter) -> None:
    client = await make_client(num_instances=4, lora_replica_factor=1, lora_scale_up_active=2.0,
                               lora_scale_down_active=0.5, lora_sample_window=2)
    st = state_of(client)
    await _load(client, "a1", adapter("a1"))
    pool = st.models["a1"].pool
    pool.active = 8  # the sampled load (requests in flight) of a hot adapter
    for _ in range(2):
        await st.loras.reconcile()
    assert len(pool.keys) == 2
    for _ in range(2):
        await st.loras.reconcile()
    assert len(pool.keys) == 3  # 4 per replica > 2: grows again
    pool.active = 0
    for _ in range(6):
        await st.loras.reconcile()
    assert len(pool.keys) == 1 and len(st.loras.adapters["a1"].loaded) == 1


async def test_kv_events_carry_adapter_and_index_apart(make_client, adapter) -> None:
    client = await make_client(num_instances=1, block_size=16, router_mode="kv")
    st = state_of(client)
    await _load(client, "a1", adapter("a1"))
    events = []
    inst = next(iter(st.models[MODEL].pool.instances.values()))
    router = st.models[MODEL].pool.router
    orig = router.on_kv_events

    def sink(batch):
        events.extend(batch.events)
        orig(batch)
    inst.engine.set_kv_event_sink(sink)
    prompt = list(range(100, 164))
    r = await client.post("/v1/completions", json={"model": "a1", "prompt": prompt, "max_tokens": 1})
    assert r.status == 200
    stored = [e for e in events if type(e).__name__ == "BlockStored"]
    assert stored and all(e.lora_name == "a1" for e in stored)
    lora_hashes = block_hashes(prompt, 16, seed=lora_seed("a1"))
    assert router.find_matches(lora_hashes)  # the adapter's blocks are indexed under its hashes
    assert not router.find_matches(block_hashes(prompt, 16))  # and never match the base model's


async def test_restart_with_lora_modules_restores(make_client, adapter) -> None:
    p1, p2 = adapter("a1"), adapter("a2")
    client = await make_client(lora_modules=f"a1={p1} a2=file://{p2}")
    assert (await (await client.get("/v1/loras")).json())["count"] == 2
    r = await client.post("/v1/completions", json={"model": "a2", "prompt": "hi", "max_tokens": 1})
    assert r.status == 200


async def test_health_lists_adapter_replicas_once(make_client, adapter) -> None:
    client = await make_client(num_instances=3, lora_replica_factor=1)
    await _load(client, "a1", adapter("a1"))
    body = await (await client.get("/health")).json()
    assert len(body["instances"]) == 3  # the base model's instances, not repeated for the adapter
    a1 = next(m for m in body["models"] if m["name"] == "a1")
    assert a1["parent"] == MODEL and len(a1["instances"]) == 1
    assert (await client.get("/ready")).status == 200


async def test_adapter_follows_a_base_model_served_anew(make_client, adapter) -> None:
    from dynamo_mono.serving.models import new_served_model

    client = await make_client(num_instances=2)
    st = state_of(client)
    await _load(client, "a1", adapter("a1"))
    old = st.models[MODEL]
    # The base model leaves (as a worker-announced model does with its last worker) and is served again.
    fresh = new_served_model(st, old.info, kind="chat", reasoning_parser=None, tool_call_parser=None,
                             configured=False)
    for inst in list(old.pool.instances.values()):
        old.pool.remove(inst.worker_id)
        await inst.engine.unload_lora("a1")  # a new engine process knows no adapters
        fresh.add_instance(inst)
    st.models[MODEL] = fresh
    await st.loras.reconcile()
    assert st.models["a1"].parent is fresh and len(st.loras.adapters["a1"].loaded) == 2
    r = await client.post("/v1/completions", json={"model": "a1", "prompt": "hi", "max_tokens": 1})
    assert r.status == 200, await r.text()
