"""SGLang plugin units: sampling params, stream chunk -> EngineOutput, KV event decoding, ServerArgs, refusals."""

from __future__ import annotations

import json

import pytest

from dynamo_mono.api import ConfigError, EngineArgs
from dynamo_mono.engine import EngineRequest, SamplingParams, StopConditions
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored


def _req(**kw) -> EngineRequest:
    sampling = kw.pop("sampling", SamplingParams())
    stop = kw.pop("stop", StopConditions(max_tokens=8))
    return EngineRequest(request_id="r", token_ids=[1, 2, 3], sampling=sampling, stop=stop, **kw)


# --- sampling ---------------------------------------------------------------------------------------
def test_sampling_params_names_and_stop_ids() -> None:
    from dynamo_mono_sglang.sampling import sampling_params
    from sglang.srt.sampling.sampling_params import normalize

    p = sampling_params(_req(sampling=SamplingParams(temperature=0.5, top_p=0.9, top_k=20, seed=3, min_p=0.1,
                                                     repetition_penalty=1.1),
                             stop=StopConditions(max_tokens=9, min_tokens=2, stop_token_ids=[5])), [2])
    assert p == {"max_new_tokens": 9, "ignore_eos": False, "min_new_tokens": 2, "stop_token_ids": [2, 5],
                 "temperature": 0.5, "top_p": 0.9, "min_p": 0.1, "repetition_penalty": 1.1, "top_k": 20,
                 "sampling_seed": 3}
    normalize(p)  # every key is one SGLang's SamplingParams takes (the fake raises TypeError otherwise)


def test_top_k_zero_is_off_and_ignore_eos_drops_eos() -> None:
    from dynamo_mono_sglang.sampling import sampling_params

    p = sampling_params(_req(sampling=SamplingParams(top_k=0), stop=StopConditions(max_tokens=4, ignore_eos=True)), [2])
    assert "top_k" not in p and "stop_token_ids" not in p and p["ignore_eos"] is True


def test_ignore_eos_with_stop_token_ids_is_refused() -> None:
    from dynamo_mono_sglang.sampling import Refused, sampling_params

    with pytest.raises(Refused, match="ignore_eos"):
        sampling_params(_req(stop=StopConditions(max_tokens=4, ignore_eos=True, stop_token_ids=[9])), [])


def test_structured_output_mapping_and_refusal() -> None:
    from dynamo_mono_sglang.sampling import Refused, sampling_params

    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    p = sampling_params(_req(sampling=SamplingParams(response_format={"type": "json_schema",
                                                                      "json_schema": {"schema": schema}})), [])
    assert json.loads(p["json_schema"]) == schema
    p = sampling_params(_req(sampling=SamplingParams(guided={"guided_regex": "a+"})), [])
    assert p["regex"] == "a+"
    with pytest.raises(Refused, match="guided_choice"):
        sampling_params(_req(sampling=SamplingParams(guided={"guided_choice": ["a", "b"]})), [])


# --- outputs ----------------------------------------------------------------------------------------
def _chunk(ids, finish=None, **meta) -> dict:
    return {"output_ids": ids, "meta_info": {"id": "r", "finish_reason": finish, "prompt_tokens": 3,
                                             "completion_tokens": len(ids), "cached_tokens": 16, **meta}}


def test_first_chunk_carries_prompt_and_cached_tokens() -> None:
    from dynamo_mono_sglang.outputs import to_output

    eo = to_output(_chunk([4, 5]), first=True, prompt_len=3, n_top=None, stop_ids=set())
    assert (eo.token_ids, eo.prompt_tokens, eo.cached_tokens, eo.finish_reason) == ([4, 5], 3, 16, None)
    eo = to_output(_chunk([6]), first=False, prompt_len=3, n_top=None, stop_ids=set())
    assert eo.prompt_tokens is None and eo.cached_tokens is None


def test_matched_stop_token_is_reported_apart() -> None:
    from dynamo_mono_sglang.outputs import to_output

    lps = [(-0.5, 7, None), (-0.1, 2, None)]
    tops = [[(-0.5, 7, None), (-1.0, 8, None)], [(-0.1, 2, None)]]
    eo = to_output(_chunk([7, 2], {"type": "stop", "matched": 2}, output_token_logprobs=lps,
                          output_top_logprobs=tops), first=False, prompt_len=3, n_top=2, stop_ids={2})
    assert eo.finish_reason == "stop" and eo.stop_token_id == 2 and eo.token_ids == [7]
    assert len(eo.logprobs) == 1 and eo.logprobs[0].token_id == 7 and eo.logprobs[0].top == [(7, -0.5), (8, -1.0)]


def test_length_and_abort_reasons() -> None:
    from dynamo_mono_sglang.outputs import to_output

    assert to_output(_chunk([1], {"type": "length", "length": 8}), first=False, prompt_len=3, n_top=None,
                     stop_ids=set()).finish_reason == "length"
    eo = to_output(_chunk([], {"type": "abort", "message": "boom", "status_code": 500}), first=False, prompt_len=3,
                   n_top=None, stop_ids=set())
    assert eo.finish_reason == "error" and "boom" in eo.error
    eo = to_output(_chunk([], {"type": "abort", "message": "x"}), first=False, prompt_len=3, n_top=None,
                   stop_ids=set(), aborted_by_us=True)
    assert eo.finish_reason == "abort" and eo.error is None


# --- KV events --------------------------------------------------------------------------------------
def test_event_conversion_maps_and_arrays_and_media() -> None:
    from dynamo_mono_sglang.kv_listener import convert

    evs = convert([
        {"type": "BlockStored", "block_hashes": [-5], "parent_block_hash": None, "token_ids": [1, 2], "block_size": 2,
         "lora_id": None},
        ["BlockStored", [6], -5, [3, 4], 2, None],
        {"type": "BlockStored", "block_hashes": [9], "parent_block_hash": 6, "token_ids": [5, 6], "block_size": 2,
         "lora_id": None, "medium": "CPU_PINNED"},
        {"type": "BlockRemoved", "block_hashes": [9], "medium": "EXTERNAL"},
        {"type": "BlockRemoved", "block_hashes": [6]},
        {"type": "AllBlocksCleared"},
    ])
    assert evs == [BlockStored([-5], None, [1, 2], 2), BlockStored([6], -5, [3, 4], 2),
                   BlockStored([9], None, [], 0, tier="host"), BlockRemoved([6]), AllBlocksCleared()]


async def test_listener_decodes_the_publishers_wire_per_dp_rank() -> None:
    """The fake's ZmqEventPublisher (SGLang's wire) -> our listener, rank 1 on port + 1."""
    import asyncio

    from dynamo_mono_sglang.kv_listener import TOPIC, KvEventListener
    from sglang.srt.disaggregation.kv_events import BlockRemoved as SB, BlockStored as SS, KVEventBatch, ZmqEventPublisher

    got = []
    listener = KvEventListener(worker_id=3, dp_size=2)
    listener.sink = got.append
    listener.start()
    pubs = [ZmqEventPublisher(r, listener.endpoint, topic=TOPIC) for r in range(2)]
    try:
        # a PUB that connects drops messages until the connection is up: publish until the first arrives
        deadline = asyncio.get_running_loop().time() + 30
        while not got and asyncio.get_running_loop().time() < deadline:
            pubs[1].publish(KVEventBatch(ts=1.0, events=[SS(block_hashes=[11], parent_block_hash=None,
                                                            token_ids=[1, 2], block_size=2, lora_id=None)]))
            await asyncio.sleep(0.05)
        pubs[1].publish(KVEventBatch(ts=2.0, events=[SB(block_hashes=[11])]))
        while len(got) < 2 or not isinstance(got[-1].events[0], BlockRemoved):
            await asyncio.sleep(0.01)
            assert asyncio.get_running_loop().time() < deadline
        first = got[0]
        assert (first.worker_id, first.dp_rank) == (3, 1)
        assert first.events == [BlockStored([11], None, [1, 2], 2)]
        assert listener.snapshot()[1].events == []  # stored then removed
    finally:
        for p in pubs:
            p.shutdown()
        await listener.stop()


# --- ServerArgs -------------------------------------------------------------------------------------
def _args(extra=(), **options) -> EngineArgs:
    from dynamo_mono.api import TINY_CHATML_DIR

    opts = {"page_size": 16, "dp_size": 2, "enable_priority_scheduling": True, **options}
    return EngineArgs(model_path=str(TINY_CHATML_DIR), served_model_name="m", instance_id=0, max_model_len=1024,
                      eos_token_ids=[2], vocab_size=2636, options=opts, extra_args=list(extra))


def test_server_args_from_options_and_passthrough() -> None:
    from dynamo_mono_sglang.server_args import build_server_args

    sa = build_server_args(_args(["--random-seed", "3"]), "tcp://127.0.0.1:5000")
    assert (sa.page_size, sa.dp_size, sa.enable_priority_scheduling, sa.random_seed) == (16, 2, True, 3)
    assert sa.skip_tokenizer_init and sa.incremental_streaming_output and sa.context_length == 1024
    assert json.loads(sa.kv_events_config) == {"publisher": "zmq", "endpoint": "tcp://127.0.0.1:5000", "topic": "kv"}
    assert sa.served_model_name == "m"


@pytest.mark.parametrize("extra, match", [
    (["--no-such-flag"], "unrecognized"),
    (["--enable-lora"], "LoRA"),
    (["--skip-tokenizer-init"], "set by dynamo-mono"),
    (["--kv-events-config", "{}"], "set by dynamo-mono"),
    (["--disaggregation-mode", "prefill"], "disaggregation"),
])
def test_server_args_refusals(extra, match) -> None:
    from dynamo_mono_sglang.server_args import build_server_args

    with pytest.raises(ConfigError, match=match):
        build_server_args(_args(extra), None)


# --- the fake is strict: a call outside the modelled 0.5.23 surface fails ----------------------------
async def test_fake_refuses_what_sglang_does_not_define() -> None:
    from dynamo_mono.api import TINY_CHATML_DIR
    import sglang
    from sglang.srt.server_args import ServerArgs

    with pytest.raises(TypeError):
        ServerArgs(model_path="x", no_such_field=1)
    sa = ServerArgs(model_path=str(TINY_CHATML_DIR), skip_tokenizer_init=True, incremental_streaming_output=True,
                    page_size=16)
    with pytest.raises(AttributeError):
        sa.no_such_field = 1
    eng = sglang.Engine(server_args=sa)
    try:
        with pytest.raises(TypeError):
            await eng.async_generate(input_ids=[1, 2], stream=True, no_such_kwarg=1)
        with pytest.raises(AttributeError):
            eng.no_such_method()
        with pytest.raises(NotImplementedError):
            await eng.async_generate(input_ids=[1, 2], stream=True, lora_path=["a"])
        stream = await eng.async_generate(input_ids=[1, 2], sampling_params={"max_tokens": 3}, stream=True)
        with pytest.raises(TypeError, match="max_tokens"):  # SGLang calls it max_new_tokens
            await stream.__anext__()
        with pytest.raises(ValueError, match="out of range"):
            await eng.async_generate(input_ids=[1, 2], stream=True, routed_dp_rank=3)
    finally:
        eng.shutdown()
