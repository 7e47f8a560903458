"""Mocker fidelity: the mocker, configured like a vLLM instance, emits the same KV block stream as vLLM."""

from __future__ import annotations

import pytest

from dynamo_mono.engine import EngineArgs
from tests.vllm.fidelity import agreement, labelled_events, run_sequence, workload

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(240)]

BLOCK_SIZE = 32
NUM_BLOCKS = 24  # small enough that the sequence evicts
MAX_TOKENS = 40


def _args(options: dict, path: str, tokenizer=None) -> EngineArgs:
    opts = dict(options)
    return EngineArgs(model_path=path, served_model_name="tiny", instance_id=0, max_model_len=512,
                      eos_token_ids=[2], vocab_size=2629, options=opts, tokenizer=tokenizer)


async def test_mocker_kv_events_agree_with_vllm(tiny_model, capsys):
    from dynamo_mono_vllm.engine import VllmEngine
    from mocker.engine import MockerEngine

    prompts = workload()
    common = {"block_size": BLOCK_SIZE, "num_gpu_blocks_override": NUM_BLOCKS, "enable_prefix_caching": True}
    vllm_engine = VllmEngine(_args({**common, "dtype": "float32", "enforce_eager": True}, str(tiny_model)))
    await vllm_engine.start()
    try:
        v_batches, v_seqs = await run_sequence(vllm_engine, prompts, MAX_TOKENS, BLOCK_SIZE)
        v_snapshot = vllm_engine.kv_snapshot()
    finally:
        await vllm_engine.stop()
    # vLLM's block pool keeps one of its blocks as the "null block": N blocks there are N - 1 usable ones.
    mocker = MockerEngine(_args({**common, "num_gpu_blocks_override": NUM_BLOCKS - 1, "speedup_ratio": 0.0},
                                str(tiny_model)))
    await mocker.start()
    m_batches, m_seqs = await run_sequence(mocker, prompts, MAX_TOKENS, BLOCK_SIZE)
    await mocker.stop()

    v_events = labelled_events(v_batches, v_seqs, BLOCK_SIZE)
    m_events = labelled_events(m_batches, m_seqs, BLOCK_SIZE)
    score = agreement(v_events, m_events)
    with capsys.disabled():
        print(f"\nKV event agreement vLLM vs mocker: {score:.4f} "
              f"({len(v_events)} vLLM events, {len(m_events)} mocker events, "
              f"{sum(e[0] == 'R' for e in v_events)} / {sum(e[0] == 'R' for e in m_events)} removals)")
    assert any(e[0] == "R" for e in v_events), "the workload must evict to compare removals"
    assert score >= 0.98, (v_events, m_events)
    # The engine's snapshot (mirrored from its events) holds exactly the blocks the events leave cached.
    held = {h for b in v_batches for ev in b.events if hasattr(ev, "token_ids") for h in ev.block_hashes}
    removed = {h for b in v_batches for ev in b.events if not hasattr(ev, "token_ids") for h in ev.block_hashes}
    snap = {h for b in v_snapshot for ev in b.events for h in ev.block_hashes}
    assert snap <= held - removed and snap
