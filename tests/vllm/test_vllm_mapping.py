"""Request mapping and KV-event conversion of the vLLM plugin (no engine started)."""

from __future__ import annotations

import pytest

from dynamo_mono.engine import EngineArgs, EngineRequest, SamplingParams, StopConditions
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored

pytestmark = pytest.mark.vllm


def _req(**sampling) -> EngineRequest:
    return EngineRequest("r", [1, 2, 3], SamplingParams(**sampling),
                         StopConditions(max_tokens=7, min_tokens=2, stop_token_ids=[5], ignore_eos=True))


def test_sampling_params_map_openai_conventions():
    from vllm.sampling_params import RequestOutputKind

    from dynamo_mono_vllm.sampling import sampling_params

    sp = sampling_params(_req(temperature=0.5, top_p=0.9, top_k=0, min_p=0.1, seed=3, presence_penalty=0.2,
                              frequency_penalty=0.3, repetition_penalty=1.1, logprobs=2))
    assert (sp.temperature, sp.top_p, sp.top_k, sp.min_p, sp.seed) == (0.5, 0.9, 0, 0.1, 3)
    assert (sp.presence_penalty, sp.frequency_penalty, sp.repetition_penalty) == (0.2, 0.3, 1.1)
    assert (sp.max_tokens, sp.min_tokens, sp.ignore_eos, sp.logprobs) == (7, 2, True, 2)
    assert 5 in sp.stop_token_ids and not sp.stop and sp.detokenize is False
    assert sp.output_kind == RequestOutputKind.DELTA
    assert sampling_params(_req(top_k=40)).top_k == 40


def test_structured_output_requests():
    from dynamo_mono_vllm.sampling import sampling_params

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    so = sampling_params(_req(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert so.structured_outputs.json == schema
    assert sampling_params(_req(response_format={"type": "json_object"})).structured_outputs.json_object is True
    assert sampling_params(_req(guided={"guided_choice": ["yes", "no"]})).structured_outputs.choice == ["yes", "no"]
    assert sampling_params(_req(guided={"guided_regex": "[0-9]+"})).structured_outputs.regex == "[0-9]+"
    assert sampling_params(_req(response_format={"type": "text"})).structured_outputs is None


def test_engine_options_and_pass_through_args_reach_vllm(tiny_model):
    from dynamo_mono_vllm.engine_args import build_engine_args

    # The vLLM plugin gets only its own options: unset ones (None) leave vLLM's defaults in place.
    opts = {"block_size": None, "num_gpu_blocks_override": None, "dtype": "float32", "max_num_seqs": 4}
    m = str(tiny_model)
    ea = build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, opts,
                                      extra_args=["--kv-cache-dtype", "auto", "--seed", "7"]))
    assert ea.block_size is None and ea.num_gpu_blocks_override is None
    assert (ea.dtype, ea.max_num_seqs, ea.seed, ea.max_model_len, ea.model) == ("float32", 4, 7, 512, m)
    from dynamo_mono.config import ConfigError

    with pytest.raises(ConfigError, match="--no-such-flag"):
        build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {}, extra_args=["--no-such-flag", "1"]))


def test_kv_events_convert_tag_and_mirror():
    from vllm.distributed.kv_events import AllBlocksCleared as VCleared
    from vllm.distributed.kv_events import BlockRemoved as VRemoved
    from vllm.distributed.kv_events import BlockStored as VStored
    from vllm.distributed.kv_events import KVEventBatch

    from dynamo_mono_vllm.kv_listener import KvEventListener, to_int_hash

    lis = KvEventListener(worker_id=3)
    try:
        got = []
        lis.sink = got.append
        h1, h2 = b"\x01" * 32, b"\x02" * 32
        lis.handle(KVEventBatch(ts=1.0, events=[
            VStored(block_hashes=[h1, h2], parent_block_hash=None, token_ids=list(range(8)), block_size=4,
                    lora_id=None, medium="GPU", lora_name=None)]))
        lis.handle(KVEventBatch(ts=2.0, events=[VRemoved(block_hashes=[h2], medium="GPU")]))
        snap = lis.snapshot()
        lis.handle(KVEventBatch(ts=3.0, events=[VCleared()]))
    finally:
        lis.sock.close(0)
        lis.ctx.term()
    assert [b.event_id for b in got] == [1, 2, 3] and {(b.worker_id, b.dp_rank) for b in got} == {(3, 0)}
    stored = got[0].events[0]
    assert isinstance(stored, BlockStored) and stored.block_hashes == [to_int_hash(h1), to_int_hash(h2)]
    assert stored.token_ids == list(range(8)) and stored.parent_block_hash is None
    assert isinstance(got[1].events[0], BlockRemoved) and isinstance(got[2].events[0], AllBlocksCleared)
    assert [ev.block_hashes for ev in snap[0].events] == [[to_int_hash(h1)]]
    assert snap[0].events[0].token_ids == [0, 1, 2, 3] and snap[0].event_id == 2
    assert lis.snapshot()[0].events == []


async def test_card_is_typed_and_bad_request_parameters_are_not_retryable(tiny_model):
    """No engine started: a stand-in vllm_config gives the card; a request vLLM refuses must not migrate."""
    from types import SimpleNamespace as NS

    from dynamo_mono.engine import EngineError
    from dynamo_mono_vllm.engine import VllmEngine

    eng = VllmEngine(EngineArgs(str(tiny_model), "m", 0, 512, [2], 100, {}))
    eng.llm = NS(vllm_config=NS(cache_config=NS(block_size=16, num_gpu_blocks=64, enable_prefix_caching=True),
                                scheduler_config=NS(max_num_seqs=4, max_num_batched_tokens=512),
                                model_config=NS(max_model_len=512)))
    eng._stopped = False
    card = eng._build_card()
    assert (card.block_size, card.total_kv_blocks, card.disaggregation_mode, card.kv_endpoint) == (16, 64, "agg", None)
    with pytest.raises(EngineError, match="vllm:") as ei:
        [o async for o in eng.generate(_req(temperature=-1.0))]
    assert not ei.value.retryable

    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError

    def failing(exc: Exception):
        async def generate(*args, **kw):
            raise exc
            yield  # an async generator, like AsyncLLM.generate

        return generate

    eng.llm.generate = failing(VLLMValidationError("prompt too long"))
    with pytest.raises(EngineError, match="prompt too long") as ei:
        [o async for o in eng.generate(_req())]
    assert not ei.value.retryable
    eng.llm.generate = failing(EngineDeadError())  # the instance died: an error output, which the pool migrates
    outs = [o async for o in eng.generate(_req())]
    assert outs[-1].finish_reason == "error" and "EngineDeadError" in outs[-1].error
