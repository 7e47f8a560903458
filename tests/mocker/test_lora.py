"""The mocker's LoRA: load_lora validation, GPU slots with LRU swaps and their cost, adapter-seeded KV."""

from __future__ import annotations

import asyncio

import pytest

from dynamo_mono.engine import EngineError, EngineRequest, LoraAdapter, SamplingParams, StopConditions
from mocker.engine import MockerEngine
from tests.mocker.conftest import make_args
from tests.lora.adapters import make_adapter


def _engine(**opts) -> MockerEngine:
    base = {"block_size": 4, "num_gpu_blocks_override": 64}
    base.update(opts)
    return MockerEngine(make_args(max_model_len=1024, **base))


def _req(rid: str, lora: str | None, n: int = 2) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=list(range(1, 17)), sampling=SamplingParams(), stop=StopConditions(max_tokens=n, ignore_eos=True),
                         lora_name=lora)


async def _run(eng: MockerEngine, req: EngineRequest) -> list:
    return [o async for o in eng.generate(req)]


async def test_load_validates_rank_and_files(tmp_path) -> None:
    eng = _engine(max_lora_rank=8)
    assert eng.model_card().supports_lora and eng.model_card().max_lora_rank == 8
    await eng.load_lora(LoraAdapter("ok", 1, make_adapter(str(tmp_path), "ok", rank=8)))
    with pytest.raises(EngineError, match="exceeds --max-lora-rank 8") as exc:
        await eng.load_lora(LoraAdapter("big", 2, make_adapter(str(tmp_path), "big", rank=16)))
    assert not exc.value.retryable
    with pytest.raises(EngineError, match="not a LoRA adapter"):
        await eng.load_lora(LoraAdapter("none", 3, str(tmp_path / "missing")))
    assert eng.list_loras() == ["ok"]
    await eng.unload_lora("ok")
    assert eng.list_loras() == []


async def test_unknown_adapter_is_refused(tmp_path) -> None:
    eng = _engine()
    with pytest.raises(EngineError, match="not loaded"):
        await _run(eng, _req("r", "nope"))


async def test_lru_slots_count_swaps(tmp_path) -> None:
    eng = _engine(max_loras=2)
    for n in ("a", "b", "c"):
        await eng.load_lora(LoraAdapter(n, 1, make_adapter(str(tmp_path), n)))
    for i, n in enumerate(["a", "b", "a", "b", "c", "a", "b"]):
        outs = await _run(eng, _req(f"r{i}", n))
        assert outs[-1].finish_reason == "length"
    # a, b load (2); a, b hit; c evicts a (LRU: a was used before b); a evicts b; b evicts c.
    assert eng.loras.swaps == 5
    await _run(eng, _req("base", None))  # the base model takes no slot
    assert eng.loras.swaps == 5


async def test_full_slots_wait_for_a_free_one(tmp_path) -> None:
    eng = _engine(max_loras=1)
    for n in ("a", "b"):
        await eng.load_lora(LoraAdapter(n, 1, make_adapter(str(tmp_path), n)))
    long = asyncio.ensure_future(_run(eng, _req("long", "a", n=50)))
    while "a" not in eng.loras.slots:
        await asyncio.sleep(0)
    short = asyncio.ensure_future(_run(eng, _req("short", "b")))
    outs = await asyncio.gather(long, short)
    assert all(o[-1].finish_reason == "length" for o in outs)
    assert eng.loras.swaps == 2 and list(eng.loras.slots) == ["b"]


async def test_adapter_blocks_are_cached_apart(tmp_path) -> None:
    eng = _engine()
    await eng.load_lora(LoraAdapter("a", 1, make_adapter(str(tmp_path), "a")))
    first = await _run(eng, _req("r1", None))
    again = await _run(eng, _req("r2", None))
    lora = await _run(eng, _req("r3", "a"))
    assert first[0].cached_tokens == 0 and again[0].cached_tokens > 0
    assert lora[0].cached_tokens == 0  # same tokens, other adapter: no prefix hit
