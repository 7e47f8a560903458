"""LoRA adapters on vLLM through the plugin: one in-process VllmEngine (--enable-lora) on the tiny random Llama and
tiny adapters made with peft. At temperature 0 the adapter's output differs from the base model's and equals what
transformers + peft generate; loads are idempotent, unknown / unloaded adapters are refused, an unload waits for the
adapter's running requests, KV events carry the adapter name, and bad adapters are refused with the reason."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from dynamo_mono.engine import (EngineArgs, EngineError, EngineRequest, LoraAdapter, SamplingParams, StopConditions,
                                TokenLogprob)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]

OPTIONS = {"dtype": "float32", "enforce_eager": True, "block_size": 32, "num_gpu_blocks_override": 64,
           "enable_lora": True}
EXTRA = ["--max-loras", "2", "--max-lora-rank", "16"]
PROMPT = list(range(100, 170))  # 70 tokens: two full blocks of 32
N_TOKENS = 6
LATENCY: dict[str, list[float]] = {"load": [], "unload": []}


def _tmp(name: str) -> Path:
    return Path(tempfile.gettempdir()) / name


@pytest.fixture(scope="module")
def adapters(tiny_model: Path) -> dict[str, Path]:
    """Adapters made with peft (random A and B, fixed seeds): two for the tiny Llama (rank 8, q_proj / v_proj),
    one of rank 32 (over --max-lora-rank 16), one for a Llama of other widths."""
    pytest.importorskip("peft", reason="the tiny adapters are made with peft (pip install peft)")
    from dynamo_mono_vllm.tiny_lora import build_tiny_lora
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    other = build_tiny_llama(_tmp("dynamo-mono-vllm-tiny-llama-h64-v1"), seed=0, hidden_size=64, heads=2)
    return {
        "a": build_tiny_lora(tiny_model, _tmp("dynamo-mono-vllm-tiny-lora-a-v1"), seed=1),
        "b": build_tiny_lora(tiny_model, _tmp("dynamo-mono-vllm-tiny-lora-b-v1"), seed=2),
        "rank32": build_tiny_lora(tiny_model, _tmp("dynamo-mono-vllm-tiny-lora-r32-v1"), seed=3, rank=32),
        "other_base": build_tiny_lora(other, _tmp("dynamo-mono-vllm-tiny-lora-h64-v1"), seed=4),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine(tiny_model: Path):
    from dynamo_mono_vllm.engine import VllmEngine

    eng = VllmEngine(EngineArgs(str(tiny_model), "tiny", 0, 512, [], 0, dict(OPTIONS), extra_args=list(EXTRA)))
    events: list = []
    await eng.start()
    eng.set_kv_event_sink(events.append)
    eng.events = events
    yield eng
    await eng.stop()


def _request(rid: str, lora: str | None = None, prompt: list[int] = PROMPT, n: int = N_TOKENS) -> EngineRequest:
    return EngineRequest(rid, list(prompt), SamplingParams(temperature=0.0),
                         StopConditions(max_tokens=n, ignore_eos=True), lora_name=lora)


async def _run(engine, request: EngineRequest) -> list[int]:
    toks: list[int] = []
    async for out in engine.generate(request):
        assert out.finish_reason != "error", out.error
        toks += out.token_ids
    return toks


async def _run_lp(engine, request: EngineRequest) -> list[TokenLogprob]:
    """Greedy tokens with their top-2 logprobs."""
    req = replace(request, sampling=replace(request.sampling, logprobs=2))
    lps: list[TokenLogprob] = []
    async for out in engine.generate(req):
        assert out.finish_reason != "error", out.error
        lps += out.logprobs or []
    return lps


def _same_up_to_near_tie(alone: list[int], batched: list[TokenLogprob], tol: float = 1e-3) -> None:
    assert len(batched) == len(alone)
    for i, (want, got) in enumerate(zip(alone, batched)):
        if got.token_id == want:
            continue
        runner_up = dict(got.top).get(want)
        assert runner_up is not None and got.logprob - runner_up < tol, (i, alone, [t.token_id for t in batched], got)
        return  # the contexts differ from here on


async def _load(engine, name: str, lora_id: int, path: Path) -> None:
    t = time.perf_counter()
    await engine.load_lora(LoraAdapter(name, lora_id, str(path)))
    LATENCY["load"].append(time.perf_counter() - t)


async def _unload(engine, name: str) -> None:
    t = time.perf_counter()
    await engine.unload_lora(name)
    LATENCY["unload"].append(time.perf_counter() - t)


def _hf_greedy(model_dir: Path, adapter: Path | None, prompt: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, len(prompt):].tolist()


async def _until(cond, what: str, deadline: float = 30.0) -> None:
    """Hang guard only: waits for a state, never orders events by time."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_card_announces_lora(engine) -> None:
    card = engine.model_card()
    assert card.supports_lora and card.max_loras == 2 and card.max_lora_rank == 16
    assert engine.list_loras() == []


async def test_adapter_output_differs_from_base_and_equals_transformers_peft(engine, tiny_model: Path,
                                                                              adapters: dict[str, Path]) -> None:
    await _load(engine, "ad-a", 11, adapters["a"])
    await _load(engine, "ad-b", 12, adapters["b"])
    assert sorted(engine.list_loras()) == ["ad-a", "ad-b"]
    base = await _run(engine, _request("base"))
    with_a = await _run(engine, _request("a", "ad-a"))
    with_b = await _run(engine, _request("b", "ad-b"))
    assert len(base) == len(with_a) == N_TOKENS
    assert with_a != base and with_b != base and with_a != with_b
    assert base == _hf_greedy(tiny_model, None, PROMPT, N_TOKENS)
    assert with_a == _hf_greedy(tiny_model, adapters["a"], PROMPT, N_TOKENS)
    assert with_b == _hf_greedy(tiny_model, adapters["b"], PROMPT, N_TOKENS)
    # base and adapters interleaved in one batch keep their own outputs. A batch of three runs other float32 kernels
    # than a batch of one, and the tiny random model's top logits are close: where a batched greedy token differs
    # from the lone run's, the lone run's token must be the batched run's runner-up at a near-tie (a wrong adapter
    # would move the whole distribution), and the sequences are compared up to that point only.
    again = await asyncio.gather(_run_lp(engine, _request("base2")), _run_lp(engine, _request("a2", "ad-a")),
                                 _run_lp(engine, _request("b2", "ad-b")))
    for alone, batched in zip((base, with_a, with_b), again):
        _same_up_to_near_tie(alone, batched)


async def test_load_is_idempotent_per_name(engine, adapters: dict[str, Path]) -> None:
    calls = []
    real = engine.llm.add_lora

    async def counting(req):
        calls.append(req.lora_name)
        return await real(req)

    engine.llm.add_lora = counting
    try:
        await asyncio.gather(*(engine.load_lora(LoraAdapter("ad-c", 13, str(adapters["a"]))) for _ in range(20)))
        await engine.load_lora(LoraAdapter("ad-a", 11, str(adapters["a"])))  # loaded before: nothing to do
    finally:
        engine.llm.add_lora = real
    assert calls == ["ad-c"]
    # the same name from other files, or an id another name holds: refused, not silently kept
    with pytest.raises(EngineError, match="unload it first") as err:
        await engine.load_lora(LoraAdapter("ad-c", 13, str(adapters["b"])))
    assert not err.value.retryable
    with pytest.raises(EngineError, match="already 'ad-a'"):
        await engine.load_lora(LoraAdapter("ad-d", 11, str(adapters["b"])))
    await _unload(engine, "ad-c")
    await engine.unload_lora("ad-c")  # idempotent
    assert "ad-c" not in engine.list_loras()


async def test_unknown_adapter_is_refused_not_retried(engine) -> None:
    with pytest.raises(EngineError, match="'nope' is not loaded") as err:
        await _run(engine, _request("x", "nope"))
    assert not err.value.retryable


async def test_unload_refuses_new_requests_and_waits_for_running_ones(engine, adapters: dict[str, Path]) -> None:
    await _load(engine, "ad-u", 21, adapters["b"])
    expected = await _run(engine, _request("u0", "ad-u", n=12))
    stream = engine.generate(_request("u1", "ad-u", n=12))
    got = list((await stream.__anext__()).token_ids)
    unload = asyncio.ensure_future(engine.unload_lora("ad-u"))  # waits for the stream: not a latency sample
    await _until(lambda: "ad-u" not in engine.list_loras(), "the unload to start")
    with pytest.raises(EngineError, match="not loaded"):
        await _run(engine, _request("u2", "ad-u"))
    assert not unload.done()  # the stream still runs with the adapter
    assert 21 in await engine.llm.list_loras()
    async for out in stream:
        got += out.token_ids
    assert got == expected  # the running request kept its adapter to the end
    await asyncio.wait_for(unload, 30)
    assert 21 not in await engine.llm.list_loras()
    # loading it again works (a fresh load)
    await _load(engine, "ad-u", 21, adapters["b"])
    assert await _run(engine, _request("u3", "ad-u", n=12)) == expected
    await _unload(engine, "ad-u")


async def test_kv_events_carry_the_adapter_name(engine, adapters: dict[str, Path]) -> None:
    from dynamo_mono.kv_events import BlockStored

    prompt = list(range(300, 370))
    await _load(engine, "ad-kv", 31, adapters["a"])
    await _run(engine, _request("kv-base", None, prompt, 2))
    await _run(engine, _request("kv-lora", "ad-kv", prompt, 2))

    def stored(lora):
        return [e for b in engine.events for e in b.events
                if type(e) is BlockStored and e.lora_name == lora and e.token_ids[:32] == prompt[:32]]

    await _until(lambda: stored("ad-kv") and stored(None), "BlockStored events of both requests")
    base_ev, lora_ev = stored(None)[0], stored("ad-kv")[0]
    assert base_ev.media_hashes == [] and lora_ev.media_hashes == []  # vLLM's bare lora-name extra key is no media
    assert lora_ev.block_hashes[0] != base_ev.block_hashes[0]  # vLLM keeps the adapter's blocks apart too
    # the router indexes the adapter's blocks under the adapter-seeded hashes the server computes for its requests
    import dynamo_mono.block_hash as bh

    if not hasattr(bh, "lora_seed"):
        pytest.skip("dynamo_mono.block_hash.lora_seed (adapter-seeded hashes) is not in this tree yet")
    from dynamo_mono.router.indexer import KvIndexer

    key = (engine.instance_id, 0)
    index = KvIndexer(32)
    index.add_instance(key, engine.kv_snapshot())
    want = bh.block_hashes(prompt, 32, seed=bh.lora_seed("ad-kv"))
    assert index.find_matches(want).get(key) == 2
    assert index.find_matches(bh.block_hashes(prompt, 32)).get(key) == 2  # the base request's blocks
    assert not index.find_matches(bh.block_hashes(prompt, 32, seed=bh.lora_seed("ad-a"))).get(key)
    await _unload(engine, "ad-kv")


@pytest.mark.parametrize("which,pattern", [
    ("missing", "No adapter found"),
    ("rank32", "rank 32 is greater than max_lora_rank 16"),
    ("other_base", "another base model"),
])
async def test_bad_adapters_are_refused_with_the_reason(engine, adapters: dict[str, Path], which: str,
                                                        pattern: str) -> None:
    path = _tmp("dynamo-mono-no-such-adapter") if which == "missing" else adapters[which]
    with pytest.raises(EngineError, match=pattern) as err:
        await engine.load_lora(LoraAdapter(f"bad-{which}", 40, str(path)))
    assert not err.value.retryable
    assert f"bad-{which}" not in engine.list_loras()
    assert engine.healthy() and len(await _run(engine, _request(f"after-{which}", n=2))) == 2


async def test_load_unload_latency(engine, adapters: dict[str, Path]) -> None:
    """Reports what the module measured (CPU, tiny adapter): no absolute-time assert."""
    for i in range(5):
        await _load(engine, f"lat-{i}", 50 + i, adapters["a"])
    for i in range(5):
        await _unload(engine, f"lat-{i}")
    ms = {k: sorted(1000 * t for t in v) for k, v in LATENCY.items()}
    print("\nLoRA latency (ms): " + ", ".join(f"{k}: n={len(v)} median {v[len(v) // 2]:.2f} max {v[-1]:.2f}"
                                            for k, v in ms.items()))
    assert ms["load"] and ms["unload"]


async def test_lora_flags_need_enable_lora(tiny_model: Path) -> None:
    from dynamo_mono.api import ConfigError
    from dynamo_mono_vllm.engine_args import build_engine_args

    opts = {k: v for k, v in OPTIONS.items() if k != "enable_lora"}
    with pytest.raises(ConfigError, match="--max-loras, --max-lora-rank .*add --enable-lora"):
        build_engine_args(EngineArgs(str(tiny_model), "t", 0, 512, [], 0, opts, extra_args=list(EXTRA)))
    with pytest.raises(ConfigError, match="not embedding models"):
        build_engine_args(EngineArgs(str(tiny_model), "t", 0, 512, [], 0, dict(OPTIONS), kind="embedding"))
    ea = build_engine_args(EngineArgs(str(tiny_model), "t", 0, 512, [], 0, dict(OPTIONS), extra_args=list(EXTRA)))
    assert ea.enable_lora and ea.max_loras == 2 and ea.max_lora_rank == 16


async def test_engine_without_lora_refuses_loads(tiny_model: Path) -> None:
    from dynamo_mono_vllm.engine import VllmEngine

    eng = VllmEngine(EngineArgs(str(tiny_model), "t", 0, 512, [], 0, {"dtype": "float32"}))
    with pytest.raises(EngineError, match="--enable-lora") as err:
        await eng.load_lora(LoraAdapter("x", 1, "/nowhere"))
    assert not err.value.retryable
