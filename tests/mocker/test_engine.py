"""MockerEngine end to end (async): caching, timing, determinism, migration, cancellation, dp, faults."""

from __future__ import annotations

import asyncio
import copy

import pytest

from conformance.waits import wait_until

from dynamo_mono.block_hash import block_hashes
from dynamo_mono.engine import Engine, EngineError
from dynamo_mono.kv_events import BlockRemoved, BlockStored
from mocker.engine import MockerEngine
from mocker.perf_model import PerfModel

from .conftest import EOS, VirtualClock, collect, make_args, make_engine, make_request, tokens_of

pytestmark = pytest.mark.timeout(20)


def small_perf(**kw) -> PerfModel:
    base = dict(prefill_base_ms=0.0, prefill_ms_per_token=0.05, prefill_ms_per_token_pair=0.0,
                decode_base_ms=1.0, decode_ms_per_seq=0.0, decode_ms_per_kv_token=0.0)
    base.update(kw)
    return PerfModel(**base)


async def test_engine_protocol_and_card() -> None:
    e = make_engine(block_size=16, data_parallel_size=2, max_num_seqs=7,
                    reasoning_parser="basic", tool_call_parser="hermes")
    assert isinstance(e, Engine)
    card = e.model_card()
    assert (card.block_size, card.dp_size, card.max_num_seqs, card.max_model_len) == (16, 2, 7, 8192)
    assert card.supports_priority and not card.priority_higher_is_urgent
    assert card.kv_events and card.eos_token_ids == [EOS]
    assert (card.reasoning_parser, card.tool_call_parser) == ("basic", "hermes")
    assert card.total_kv_blocks == 16384


async def test_shared_prefix_reports_cached_whole_blocks() -> None:
    e = make_engine(block_size=16)
    prefix = [(i * 13) % 250 for i in range(100)]
    first = await collect(e, make_request("a", prefix + [1, 2, 3, 4, 5], max_tokens=4))
    assert first[0].cached_tokens == 0 and first[0].prompt_tokens == 105
    second = await collect(e, make_request("b", prefix + [9, 9, 9, 9, 9, 9, 9], max_tokens=4))
    assert second[0].cached_tokens == 96  # 6 whole blocks of 16 shared
    assert second[0].prompt_tokens == 107
    assert e.load_metrics()[0].prefix_hit_rate > 0.4


async def _ttft(clock: VirtualClock, e: MockerEngine, req) -> float:
    """Simulated seconds from submitting req to its first output."""
    t0 = clock.read()
    agen = e.generate(req)
    await agen.__anext__()
    dt = clock.read() - t0
    await agen.aclose()
    return dt


async def test_time_to_first_output_grows_with_prompt_length(virtual_clock: VirtualClock) -> None:
    perf = small_perf()

    def engine() -> MockerEngine:  # a fresh one per request: no step in progress, no cached prefix
        return MockerEngine(make_args(speedup_ratio=1.0, block_size=16), perf_model=perf)

    short = await _ttft(virtual_clock, engine(), make_request("s", prompt_len=40, max_tokens=2))
    long = await _ttft(virtual_clock, engine(), make_request("l", prompt_len=3000, max_tokens=2))
    # exactly one prefill step each (the budget holds the whole prompt), in simulated time
    assert short == pytest.approx(perf.step_ms([(40, 0, 1.0)], 0, 0) / 1000)  # 2 ms
    assert long == pytest.approx(perf.step_ms([(3000, 0, 1.0)], 0, 0) / 1000)  # 150 ms


async def test_speedup_ratio_divides_simulated_time(virtual_clock: VirtualClock) -> None:
    perf = small_perf()
    e = MockerEngine(make_args(speedup_ratio=4.0, block_size=16), perf_model=perf)
    ttft = await _ttft(virtual_clock, e, make_request("x", prompt_len=1000, max_tokens=2))
    assert ttft == pytest.approx(perf.step_ms([(1000, 0, 1.0)], 0, 0) / 1000 / 4)


async def test_same_seed_gives_same_tokens_and_other_seed_differs() -> None:
    e1, e2 = make_engine(), make_engine()
    a = tokens_of(await collect(e1, make_request("x1", max_tokens=40, seed=7)))
    b = tokens_of(await collect(e2, make_request("x2", max_tokens=40, seed=7)))
    c = tokens_of(await collect(e2, make_request("x3", max_tokens=40, seed=8)))
    assert a == b and len(a) == 40
    assert a != c
    assert all(t < 256 for t in a)  # ordinary tokens only, no specials


async def test_natural_eos_length_is_seeded_and_bounded() -> None:
    e = make_engine()
    lengths = set()
    for i in range(6):
        outs = await collect(e, make_request(f"n{i}", max_tokens=1000, ignore_eos=False))
        assert outs[-1].finish_reason == "stop" and outs[-1].stop_token_id == EOS
        toks = tokens_of(outs)
        assert EOS not in toks and 16 <= len(toks) <= 256
        lengths.add(len(toks))
    assert len(lengths) > 1


async def test_migration_continues_with_identical_tokens() -> None:
    e = make_engine(block_size=8)
    prompt = [(i * 5) % 250 for i in range(30)]
    full = await collect(e, make_request("m", prompt, max_tokens=300, ignore_eos=False))
    ref = tokens_of(full)
    # first instance dies after 7 tokens (injected), the frontend re-dispatches prompt + those 7 tokens
    faulty = make_engine(block_size=8)
    part = await collect(faulty, make_request("m", prompt, max_tokens=300, ignore_eos=False,
                                              annotations=["mocker.fail_after=7"]))
    assert part[-1].finish_reason == "error" and part[-1].error
    got = tokens_of(part)
    assert got == ref[:7]
    rest = await collect(e, make_request("m", prompt + got, max_tokens=293, ignore_eos=False,
                                         resumed_output_tokens=7))
    assert got + tokens_of(rest) == ref
    assert rest[-1].finish_reason == full[-1].finish_reason and rest[-1].stop_token_id == full[-1].stop_token_id


async def test_generate_leaves_the_request_untouched() -> None:
    e = make_engine(block_size=8, data_parallel_size=2)
    req = make_request("u", prompt_len=30, max_tokens=20, ignore_eos=False, resumed_output_tokens=3,
                       block_hashes=block_hashes([(i * 7 + 3) % 250 for i in range(30)], 8), logprobs=2)
    before = copy.deepcopy(req)
    assert tokens_of(await collect(e, req))
    assert req == before


async def test_cancellation_frees_blocks_immediately() -> None:
    e = make_engine(block_size=4)
    baseline = e.load_metrics()[0].kv_active_blocks
    agen = e.generate(make_request("c", prompt_len=40, max_tokens=100_000))
    await agen.__anext__()
    assert e.load_metrics()[0].kv_active_blocks > baseline
    await agen.aclose()
    m = e.load_metrics()[0]
    assert m.kv_active_blocks == baseline and m.running == 0

    async def consume() -> None:
        async for _ in e.generate(make_request("d", prompt_len=40, max_tokens=100_000)):
            pass

    task = asyncio.create_task(consume())
    await wait_until(lambda: e.load_metrics()[0].running, "the request to run")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert e.load_metrics()[0].kv_active_blocks == baseline


async def test_abort_by_id_ends_stream_with_abort() -> None:
    e = make_engine(block_size=4)
    agen = e.generate(make_request("z", prompt_len=20, max_tokens=100_000))
    await agen.__anext__()
    await e.abort("z")
    assert e.load_metrics()[0].kv_active_blocks == 0
    rest = [o async for o in agen]
    assert rest[-1].finish_reason == "abort"


async def test_dp_ranks_are_independent() -> None:
    e = make_engine(block_size=8, data_parallel_size=2)
    batches = []
    e.set_kv_event_sink(batches.append)
    prompt = list(range(40))
    a = await collect(e, make_request("a", prompt, max_tokens=2, dp_rank=0))
    b = await collect(e, make_request("b", prompt, max_tokens=2, dp_rank=1))
    c = await collect(e, make_request("c", prompt, max_tokens=2, dp_rank=0))
    assert a[0].cached_tokens == 0 and b[0].cached_tokens == 0 and c[0].cached_tokens == 32
    assert {b.dp_rank for b in batches} == {0, 1}
    for rank in (0, 1):
        ids = [b.event_id for b in batches if b.dp_rank == rank]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    with pytest.raises(EngineError, match="out of range") as ei:
        await collect(e, make_request("bad", prompt, max_tokens=2, dp_rank=5))
    assert not ei.value.retryable

    # without a hint, concurrent requests spread over the ranks
    gens = [e.generate(make_request(f"s{i}", prompt_len=16, max_tokens=50)) for i in range(2)]
    for g in gens:
        await g.__anext__()
    assert [m.running for m in e.load_metrics()] == [1, 1]
    for g in gens:
        await g.aclose()


async def test_kv_events_mirror_prompt_blocks_and_snapshot() -> None:
    e = make_engine(block_size=8, num_gpu_blocks_override=6)
    batches = []
    e.set_kv_event_sink(batches.append)
    prompt = list(range(1, 34))  # 4 full blocks + 1 token
    await collect(e, make_request("k", prompt, max_tokens=1))
    stored = [h for b in batches for ev in b.events if isinstance(ev, BlockStored) for h in ev.block_hashes]
    assert stored[:4] == block_hashes(prompt, 8)
    first = next(ev for b in batches for ev in b.events if isinstance(ev, BlockStored))
    assert first.parent_block_hash is None and first.token_ids[:8] == prompt[:8] and first.block_size == 8
    snap = e.kv_snapshot()
    assert {h for ev in snap[0].events for h in ev.block_hashes} == set(stored)
    # a different long prompt forces evictions, reported as BlockRemoved
    await collect(e, make_request("k2", list(range(100, 140)), max_tokens=1))
    removed = [h for b in batches for ev in b.events if isinstance(ev, BlockRemoved) for h in ev.block_hashes]
    assert removed and set(removed) <= set(stored)
    live = {h for ev in e.kv_snapshot()[0].events for h in ev.block_hashes}
    replay = set()
    for b in batches:
        for ev in b.events:
            if isinstance(ev, BlockStored):
                replay.update(ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                replay.difference_update(ev.block_hashes)
    assert replay == live


async def test_queueing_visible_in_load_metrics() -> None:
    e = make_engine(max_num_seqs=2, block_size=4)
    gens = [e.generate(make_request(f"q{i}", prompt_len=8, max_tokens=10_000)) for i in range(5)]
    tasks = [asyncio.create_task(g.__anext__()) for g in gens]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # a first token: the engine has stepped
    m = e.load_metrics()[0]
    assert m.running == 2 and m.waiting == 3
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for g in gens:
        await g.aclose()
    assert e.load_metrics()[0].kv_active_blocks == 0 and e.load_metrics()[0].waiting == 0


async def test_logprob_shapes() -> None:
    e = make_engine()
    outs = await collect(e, make_request("lp", max_tokens=20, logprobs=3))
    for o in outs:
        assert o.logprobs is not None and len(o.logprobs) == len(o.token_ids)
        for tok, lp in zip(o.token_ids, o.logprobs):
            assert lp.token_id == tok and lp.logprob <= 0
            assert len(lp.top) == 3 and lp.top[0][0] == tok
            vals = [v for _, v in lp.top]
            assert vals == sorted(vals, reverse=True) and all(v <= 0 for v in vals)
            assert len({t for t, _ in lp.top}) == 3
    outs0 = await collect(e, make_request("lp0", max_tokens=5, logprobs=0))
    assert all(lp.top == [] for o in outs0 for lp in o.logprobs)
    plain = await collect(e, make_request("nolp", max_tokens=5))
    assert all(o.logprobs is None for o in plain)


async def test_min_tokens_and_stop_token_ids() -> None:
    e = make_engine()
    ref = tokens_of(await collect(e, make_request("s", max_tokens=50, seed=3)))
    stop_tok = ref[5]
    outs = await collect(e, make_request("s", max_tokens=50, seed=3, stop_token_ids=[stop_tok]))
    first = ref.index(stop_tok)
    assert tokens_of(outs) == ref[:first]
    assert outs[-1].finish_reason == "stop" and outs[-1].stop_token_id == stop_tok
    # min_tokens pushes EOS out
    natural = tokens_of(await collect(e, make_request("e", max_tokens=1000, ignore_eos=False, seed=4)))
    longer = await collect(e, make_request("e", max_tokens=1000, ignore_eos=False, seed=4,
                                           min_tokens=len(natural) + 10))
    assert len(tokens_of(longer)) == len(natural) + 10 and longer[-1].stop_token_id == EOS


async def test_fail_after_annotation_frees_blocks() -> None:
    e = make_engine(block_size=4)
    outs = await collect(e, make_request("f", max_tokens=100, annotations=["mocker.fail_after=5"]))
    assert len(tokens_of(outs)) == 5
    assert outs[-1].finish_reason == "error" and "5 tokens" in outs[-1].error
    assert e.load_metrics()[0].kv_active_blocks == 0 and e.healthy()


async def test_server_level_fail_after_only_on_listed_instances() -> None:
    faulty = MockerEngine(make_args(instance_id=2, mocker_fail_after=3, mocker_fault_instances="2,5"))
    fine = MockerEngine(make_args(instance_id=1, mocker_fail_after=3, mocker_fault_instances="2,5"))
    a = await collect(faulty, make_request("a", max_tokens=20))
    b = await collect(fine, make_request("b", max_tokens=20))
    assert a[-1].finish_reason == "error" and len(tokens_of(a)) == 3
    assert b[-1].finish_reason == "length" and len(tokens_of(b)) == 20


async def test_crash_fails_everything_until_duration_passes(virtual_clock: VirtualClock) -> None:
    e = make_engine(mocker_crash_duration=0.3, block_size=4)
    batches = []
    e.set_kv_event_sink(batches.append)
    inflight = e.generate(make_request("long", prompt_len=20, max_tokens=100_000))
    await inflight.__anext__()
    crash = await collect(e, make_request("boom", annotations=["mocker.crash"]))
    assert crash[-1].finish_reason == "error"
    assert not e.healthy()
    rest = [o async for o in inflight]
    assert rest[-1].finish_reason == "error"
    during = await collect(e, make_request("during"))
    assert during[-1].finish_reason == "error"
    assert e.load_metrics()[0].kv_active_blocks == 0
    assert e.kv_snapshot()[0].events == []
    assert type(batches[-1].events[-1]).__name__ == "AllBlocksCleared"
    virtual_clock.advance(0.29)
    assert not e.healthy()
    virtual_clock.advance(0.02)
    assert e.healthy()
    after = await collect(e, make_request("after", max_tokens=3))
    assert after[-1].finish_reason == "length"


async def test_recover_annotation_clears_crash() -> None:
    e = make_engine(mocker_crash_duration=60.0)
    await collect(e, make_request("boom", annotations=["mocker.crash"]))
    assert not e.healthy()
    outs = await collect(e, make_request("r", max_tokens=2, annotations=["mocker.recover"]))
    assert e.healthy() and outs[-1].finish_reason == "length"


async def test_stall_pauses_stepping(virtual_clock: VirtualClock) -> None:
    e = make_engine()  # speedup 0: steps take no simulated time, only the stall does
    t0 = virtual_clock.read()
    outs = await collect(e, make_request("st", max_tokens=3, annotations=["mocker.stall=0.3"]))
    assert virtual_clock.read() - t0 == pytest.approx(0.3)
    assert outs[-1].finish_reason == "length"


async def test_slow_prefill_stretches_time_to_first_token(virtual_clock: VirtualClock) -> None:
    def engine() -> MockerEngine:  # a fresh one per request: no step in progress, no cached prefix
        return MockerEngine(make_args(speedup_ratio=1.0), perf_model=small_perf())  # no fixed prefill cost

    normal = await _ttft(virtual_clock, engine(), make_request("n", prompt_len=1000, max_tokens=2))
    slow = await _ttft(virtual_clock, engine(), make_request("s", prompt_len=1000, max_tokens=2,
                                                             annotations=["mocker.slow_prefill=4"]))
    assert normal == pytest.approx(0.05)  # 1000 tokens x 0.05 ms
    assert slow == pytest.approx(4 * normal)


async def test_prompt_too_big_for_pool_is_an_error_not_a_hang() -> None:
    e = make_engine(block_size=4, num_gpu_blocks_override=4)
    with pytest.raises(EngineError, match="KV blocks") as ei:
        await collect(e, make_request("big", prompt_len=40))
    assert not ei.value.retryable  # the request cannot fit; migrating it would not help


async def test_outputs_batch_tokens_when_consumer_lags() -> None:
    e = make_engine()
    agen = e.generate(make_request("lag", max_tokens=30))
    first = await agen.__anext__()
    seq = e.requests["lag"][0]
    await wait_until(lambda: len(seq.pending) > 1, "steps to run while the consumer is not reading")
    second = await agen.__anext__()
    assert len(first.token_ids) >= 1 and len(second.token_ids) > 1
    await agen.aclose()


async def test_start_sleeps_startup_time_and_stop_fails_inflight(virtual_clock: VirtualClock) -> None:
    e = make_engine(startup_time=0.2)
    t0 = virtual_clock.read()
    await e.start()
    assert virtual_clock.read() - t0 == pytest.approx(0.2)
    agen = e.generate(make_request("x", max_tokens=100_000))
    await agen.__anext__()
    await e.stop()
    rest = [o async for o in agen]
    assert rest[-1].finish_reason == "error" and not e.healthy()
