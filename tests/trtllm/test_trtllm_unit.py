"""TensorRT-LLM plugin units against the fake tensorrt_llm: option mapping, pass-through, delta conversion, KV event
conversion (partial blocks, signed hashes, dp ranks, window filter) into the router's index, stats -> load, and
request refusals / finish mapping through an in-process engine."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from dynamo_mono.api import (ConfigError, EngineArgs, EngineError, EngineRequest, MediaItem, SamplingParams,
                             StopConditions, TINY_CHATML_DIR, block_hashes)
from dynamo_mono.router.indexer import KvIndexer

import tensorrt_llm
from dynamo_mono_trtllm.engine import Deltas, TrtllmEngine, token_logprobs
from dynamo_mono_trtllm.events import KvEventConverter, to_signed_i64
from dynamo_mono_trtllm.llm_args import build_plan, passthrough_kwargs
from dynamo_mono_trtllm.load import StatsRecorder
from dynamo_mono_trtllm.options import TRTLLM_OPTIONS

pytestmark = pytest.mark.timeout(60)

BS = 16


def _args(extra: list[str] | None = None, **opts) -> EngineArgs:
    o = {opt.name: opt.default for opt in TRTLLM_OPTIONS}
    o["tokens_per_block"] = BS
    o.update(opts)
    return EngineArgs(TINY_CHATML_DIR, "tiny", 0, 4096, [2], 2636, o, extra_args=list(extra or []))


def test_runs_against_the_fake() -> None:
    assert getattr(tensorrt_llm, "FAKE", False), tensorrt_llm.__file__


# --- options ------------------------------------------------------------------------------------------
def test_plan_maps_options_to_llm_args_and_kv_cache_config() -> None:
    plan = build_plan(_args(["--max-batch-size", "8", "--cuda-graph-config", "null", "--print-iter-log"],
                            tensor_parallel_size=2, enable_attention_dp=True, max_num_tokens=512,
                            free_gpu_memory_fraction=0.5, kv_cache_max_tokens=4096, event_buffer_max_size=64))
    kw = plan.kwargs
    assert kw["backend"] == "pytorch" and kw["skip_tokenizer_init"] is True
    assert kw["enable_iter_perf_stats"] is True and kw["return_perf_metrics"] is True
    assert kw["tensor_parallel_size"] == 2 and kw["enable_attention_dp"] is True and kw["max_num_tokens"] == 512
    assert kw["max_batch_size"] == 8 and kw["cuda_graph_config"] is None and kw["print_iter_log"] is True
    assert kw["max_seq_len"] == 4096
    assert plan.dp_size == 2 and plan.block_size == BS and plan.kv_events
    assert plan.kv_cache == {"tokens_per_block": BS, "enable_block_reuse": True, "enable_partial_reuse": False,
                             "event_buffer_max_size": 64, "free_gpu_memory_fraction": 0.5, "max_tokens": 4096}


def test_plan_without_block_reuse_has_no_kv_events() -> None:
    plan = build_plan(_args(enable_block_reuse=False))
    assert not plan.kv_events and plan.kv_cache["event_buffer_max_size"] == 0
    assert not build_plan(_args(trtllm_kv_events=False)).kv_events


@pytest.mark.parametrize("extra, why", [
    (["--kv-cache-config", "{}"], "KvCacheConfig options"),
    (["--backend", "tensorrt"], "PyTorch backend"),
    (["--max-batch-size", "4", "--max-batch-size", "8"], "given twice"),
    (["stray"], "--field-name VALUE"),
    (["--max-seq-len", "9"], "--max-seq-len"),
])
def test_passthrough_refuses_what_the_plugin_owns(extra: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        build_plan(_args(extra))


def test_option_and_its_passthrough_flag_twice_is_an_error() -> None:
    with pytest.raises(ConfigError, match="twice"):
        build_plan(_args(["--max-num-tokens", "64"], max_num_tokens=128))


def test_passthrough_values() -> None:
    assert passthrough_kwargs(["--a-b=3", "--c", '{"x": 1}', "--no-d", "--e", "word", "--f"]) == {
        "a_b": 3, "c": {"x": 1}, "d": False, "e": "word", "f": True}


def test_block_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        build_plan(_args(tokens_per_block=24))


def test_unknown_llm_argument_is_refused_at_start() -> None:
    eng = TrtllmEngine(_args(["--no-such-field", "1"]))
    with pytest.raises(ConfigError, match="no_such_field"):
        asyncio.run(eng.start())


# --- the fake is strict ---------------------------------------------------------------------------------
def test_fake_is_strict_about_names() -> None:
    from tensorrt_llm import SamplingParams as TSP
    from tensorrt_llm.executor.result import CompletionOutput
    from tensorrt_llm.llmapi import KvCacheConfig

    with pytest.raises(TypeError):
        TSP(end_id=2, priority=1)  # no such field in the real SamplingParams
    with pytest.raises(TypeError):
        KvCacheConfig(block_size=16)
    with pytest.raises(AttributeError):
        CompletionOutput(0).num_cached_tokens  # noqa: B018
    with pytest.raises(ValueError, match="best_of"):
        TSP(end_id=2, n=2, best_of=1)
    with pytest.raises(ValueError, match="Greedy"):
        TSP(end_id=2, n=2)


# --- deltas / logprobs -----------------------------------------------------------------------------------
def test_cumulative_token_ids_become_deltas() -> None:
    d = Deltas()
    comp = SimpleNamespace(token_ids=[1, 2], logprobs=[0.1, 0.2])
    assert d.take(comp) == ([1, 2], [0.1, 0.2])
    comp.token_ids += [3]
    comp.logprobs += [0.3]
    assert d.take(comp) == ([3], [0.3])
    assert d.take(comp) == ([], [])


def test_logprob_entries() -> None:
    from tensorrt_llm.executor.result import Logprob

    out = token_logprobs([5, 6], [{5: Logprob(-0.1, 1), 7: Logprob(-2.0, 2)}, {8: Logprob(-0.5, 1), 6: Logprob(-1.0, 2)}], 1)
    assert [(t.token_id, t.logprob, t.top) for t in out] == [(5, -0.1, [(5, -0.1)]), (6, -1.0, [(8, -0.5)])]
    assert token_logprobs([9], [-0.25], 0)[0].logprob == -0.25


# --- KV events -------------------------------------------------------------------------------------------
def _block(h: int, toks: list[int]) -> dict:
    return {"type": "stored_block", "block_hash": h, "tokens": [{"type": "unique_token", "token_id": t,
                                                                  "token_extra_id": 0} for t in toks]}


def test_events_drop_partial_blocks_and_their_removal_and_sign_hashes() -> None:
    conv = KvEventConverter(7, BS, dp_size=2)
    got = []
    conv.sink = got.append
    big = (1 << 64) - 5
    toks = list(range(100, 100 + 2 * BS + 3))
    assert conv.handle({"event_id": 0, "data": {"type": "created", "num_blocks_per_cache_level": [10, 0]},
                        "window_size": 4096, "attention_dp_rank": 1}) is None
    conv.handle({"event_id": 1, "attention_dp_rank": 1, "window_size": 4096, "data": {
        "type": "stored", "parent_hash": None,
        "blocks": [_block(big, toks[:BS]), _block(11, toks[BS:2 * BS]), _block(12, toks[2 * BS:])]}})
    (b1,) = got
    assert (b1.worker_id, b1.dp_rank, b1.event_id) == (7, 1, 1)
    (st,) = b1.events
    assert st.block_hashes == [to_signed_i64(big), 11] == [-5, 11] and st.token_ids == toks[:2 * BS]
    assert st.block_size == BS and st.parent_block_hash is None
    conv.handle({"event_id": 2, "attention_dp_rank": 1, "window_size": 4096,
                 "data": {"type": "removed", "block_hashes": [12, 11]}})
    assert got[1].events[0].block_hashes == [11]  # the partial block's removal is not announced
    # a sliding-window layer group's events are not the prefix cache the router matches
    assert conv.handle({"event_id": 3, "window_size": 512, "data": {"type": "removed", "block_hashes": [big]}}) is None
    conv.handle({"event_id": 5, "data": {"type": "removed", "block_hashes": [big]}})
    assert conv.gaps == 1 and got[-1].dp_rank == 0
    snap = conv.snapshot()  # that removal was rank 0's: rank 1 still holds its first block
    assert [[e.block_hashes for e in b.events] for b in snap] == [[], [[-5]]]


def test_converted_events_make_the_router_match_our_block_hashes() -> None:
    """TensorRT-LLM names blocks by its own hashes: the router re-hashes their tokens into ours."""
    from tensorrt_llm.llmapi.llm import _trt_hash

    toks = list(range(300, 300 + 3 * BS))
    ours = block_hashes(toks, BS)
    conv = KvEventConverter(3, BS)
    idx = KvIndexer(BS)
    idx.add_instance((3, 0))
    conv.sink = idx.apply
    trt = [_trt_hash(h) for h in ours]
    conv.handle({"event_id": 1, "data": {"type": "stored", "parent_hash": None,
                                         "blocks": [_block(trt[0], toks[:BS])]}})
    conv.handle({"event_id": 2, "data": {"type": "stored", "parent_hash": trt[0],
                                         "blocks": [_block(trt[1], toks[BS:2 * BS]), _block(trt[2], toks[2 * BS:])]}})
    assert idx.find_matches(ours) == {(3, 0): 3}
    conv.handle({"event_id": 3, "data": {"type": "removed", "block_hashes": [trt[2]]}})
    assert idx.find_matches(ours) == {(3, 0): 2}


# --- stats -> load -----------------------------------------------------------------------------------------
def test_stats_become_load_metrics() -> None:
    rec = StatsRecorder(1)
    rec.in_flight[0] = 5
    rec.record({"numActiveRequests": 3, "numQueuedRequests": 1,
                "kvCacheStats": {"maxNumBlocks": 100, "usedNumBlocks": 40, "freeNumBlocks": 60, "cacheHitRate": 0.5},
                "inflightBatchingStats": {"numPausedRequests": 1}})
    (m,) = rec.metrics()
    assert (m.running, m.waiting, m.kv_active_blocks, m.kv_total_blocks, m.prefix_hit_rate) == (3, 2, 40, 100, 0.5)
    rec.in_flight[0] = 0  # all cancelled: the next iteration's stats have not come yet
    assert (rec.metrics()[0].running, rec.metrics()[0].waiting) == (0, 0)
    two = StatsRecorder(2)
    two.in_flight[:] = [1, 2]
    two.record({"kvCacheStats": {"maxNumBlocks": 100, "usedNumBlocks": 40}})
    assert [(m.dp_rank, m.running, m.kv_total_blocks) for m in two.metrics()] == [(0, 1, 50), (1, 2, 50)]


# --- an in-process engine on the fake ----------------------------------------------------------------------
def _req(rid: str, **kw) -> EngineRequest:
    stop = StopConditions(max_tokens=kw.pop("max_tokens", 8), stop_token_ids=kw.pop("stop_token_ids", []),
                          ignore_eos=kw.pop("ignore_eos", False))
    return EngineRequest(rid, kw.pop("tokens", list(range(10, 10 + 3 * BS + 5))), kw.pop("sampling", SamplingParams()),
                         stop, **kw)


async def _collect(eng: TrtllmEngine, req: EngineRequest) -> list:
    return [o async for o in eng.generate(req)]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRTLLM_FAKE_SPEEDUP_RATIO", "0")
    loop = asyncio.new_event_loop()
    eng = TrtllmEngine(_args())
    loop.run_until_complete(eng.start())
    yield eng, loop
    loop.run_until_complete(eng.stop())
    loop.close()


@pytest.mark.parametrize("field, value, why", [
    ("priority", 3, "no request priority"),
    ("lora_name", "a", "LoRA"),
    ("media", [MediaItem("image", None, "0" * 64, 0, 0, 1)], "media input"),
])
def test_unsupported_request_features_are_refused(engine, field: str, value, why: str) -> None:
    eng, loop = engine
    with pytest.raises(EngineError, match=why) as exc:
        loop.run_until_complete(_collect(eng, _req("r", **{field: value})))
    assert not exc.value.retryable


def test_structured_output_is_refused(engine) -> None:
    eng, loop = engine
    with pytest.raises(EngineError, match="structured output"):
        loop.run_until_complete(_collect(eng, _req("r", sampling=SamplingParams(response_format={"type": "json_object"}))))


def test_length_stop_logprobs_and_n(engine) -> None:
    eng, loop = engine
    outs = loop.run_until_complete(_collect(eng, _req("a", max_tokens=5, ignore_eos=True,
                                                     sampling=SamplingParams(logprobs=2))))
    assert sum(len(o.token_ids) for o in outs) == 5 and outs[-1].finish_reason == "length"
    assert outs[0].prompt_tokens == 3 * BS + 5 and outs[0].cached_tokens == 0
    assert all(len(o.logprobs) == len(o.token_ids) for o in outs if o.token_ids)
    assert all(len(lp.top) == 2 for o in outs for lp in o.logprobs or ())
    # the same prompt again: its full blocks come from the cache
    again = loop.run_until_complete(_collect(eng, _req("b", max_tokens=2)))
    assert again[0].cached_tokens == 3 * BS
    # EOS: the random stream ends within 256 tokens; the end id is reported apart, not in token_ids
    fin = loop.run_until_complete(_collect(eng, _req("c", max_tokens=400)))
    assert fin[-1].finish_reason == "stop" and fin[-1].stop_token_id == 2
    assert 2 not in [t for o in fin for t in o.token_ids]
    # n = 2 in one TensorRT-LLM request (sampling, not greedy): two indexed streams
    two = loop.run_until_complete(_collect(eng, _req("d", max_tokens=4, ignore_eos=True,
                                                     sampling=SamplingParams(n=2, top_p=0.9))))
    assert sorted({o.index for o in two}) == [0, 1]
    assert [sum(len(o.token_ids) for o in two if o.index == i) for i in (0, 1)] == [4, 4]
    assert sorted(o.finish_reason for o in two if o.finish_reason) == ["length", "length"]


def test_stop_token_id_is_reported(engine) -> None:
    eng, loop = engine
    seeded = SamplingParams(seed=7)  # the same seed: the same token stream
    first = loop.run_until_complete(_collect(eng, _req("s0", max_tokens=6, ignore_eos=True, sampling=seeded)))
    toks = [t for o in first for t in o.token_ids]
    assert toks[3] not in toks[:3]
    # again with its 4th token as a stop token
    outs = loop.run_until_complete(_collect(eng, _req("s1", max_tokens=6, ignore_eos=True, sampling=seeded,
                                                      stop_token_ids=[toks[3]])))
    got = [t for o in outs for t in o.token_ids]
    assert got == toks[:3] and outs[-1].finish_reason == "stop" and outs[-1].stop_token_id == toks[3]


def test_abort_frees_the_request_in_the_engine(engine) -> None:
    eng, loop = engine

    async def run() -> None:
        gen = eng.generate(_req("x", max_tokens=100000, ignore_eos=True))
        await gen.__anext__()
        assert eng.stats.in_flight == [1]
        await gen.aclose()  # the client went away
        assert eng.stats.in_flight == [0]
        sched = eng.llm._engine.ranks[0]
        for _ in range(1000):  # the fake processes the cancellation on the loop
            if not sched.running and not sched.waiting:
                break
            await asyncio.sleep(0)
        assert not sched.running and not sched.waiting and sched.kv.active_blocks == 0

    loop.run_until_complete(run())


def test_fidelity_check_runs_on_the_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """plugins/trtllm/fidelity_check.py states the facts the fake assumes; on the fake they hold (gpu-smoke.sh
    prints the same facts from the real engine, to compare)."""
    import importlib.util

    from tests.trtllm.conftest import PLUGIN_DIR

    monkeypatch.setenv("TRTLLM_FAKE_SPEEDUP_RATIO", "0")
    spec = importlib.util.spec_from_file_location("trtllm_fidelity_check", PLUGIN_DIR / "fidelity_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    facts = asyncio.run(mod.check(TINY_CHATML_DIR, BS, 2))
    assert facts["end_id_required"] and facts["cumulative_token_ids"]
    assert facts["finish_reason_length"] == "length" and facts["cancelled_finish_reason"] == "cancelled"
    assert facts["eos_finish"]["finish_reason"] == "stop" and not facts["eos_finish"]["end_id_in_token_ids"]
    assert facts["perf_metrics_reused_blocks_first"] == 0 and facts["perf_metrics_reused_blocks_repeat"] == 3
    assert facts["event_types"] == ["created", "stored"] and facts["partial_blocks_stored"]
    assert facts["stats_count"] > 0 and "kvCacheStats" in facts["stats_shape"]


def test_attention_dp_ranks_are_dp_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """--enable-attention-dp with 2 tensor-parallel ranks: 2 dp ranks; a pinned request runs on its rank
    (SchedulingParams.attention_dp_rank, not relaxed) and its KV events carry that rank."""
    monkeypatch.setenv("TRTLLM_FAKE_SPEEDUP_RATIO", "0")

    async def run() -> None:
        eng = TrtllmEngine(_args(tensor_parallel_size=2, enable_attention_dp=True))
        await eng.start()
        try:
            assert eng.model_card().dp_size == 2
            got = []
            eng.set_kv_event_sink(got.append)
            outs = [o async for o in eng.generate(_req("p", max_tokens=3, dp_rank=1))]
            assert outs[-1].finish_reason == "length"
            ranks = eng.llm._engine.ranks
            assert ranks[1].queried_tokens > 0 and ranks[0].queried_tokens == 0
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
            assert got and {b.dp_rank for b in got} == {1}
            assert [m.dp_rank for m in eng.load_metrics()] == [0, 1]
        finally:
            await eng.stop()

    asyncio.run(run())


def test_a_failed_request_ends_with_an_error_and_the_engine_stays_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRTLLM_FAKE_SPEEDUP_RATIO", "0")
    monkeypatch.setenv("TRTLLM_FAKE_FAIL_AFTER", "3")

    async def run() -> None:
        eng = TrtllmEngine(_args())
        await eng.start()
        try:
            outs = [o async for o in eng.generate(_req("f", max_tokens=10, ignore_eos=True))]
            assert outs[-1].finish_reason == "error" and "trtllm" in outs[-1].error
            assert eng.healthy() and eng.stats.in_flight == [0]
        finally:
            await eng.stop()

    asyncio.run(run())
