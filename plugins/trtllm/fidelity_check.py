"""Checks, against whatever `tensorrt_llm` is importable (the real one on a GPU machine, or the fake), the facts
the fake and the plugin assume about TensorRT-LLM's LLM API, and prints them as JSON. gpu-smoke.sh runs it on the
real engine; tests/trtllm runs it on the fake; the two outputs must agree (a difference is a fake to fix).

    python plugins/trtllm/fidelity_check.py MODEL_DIR [--tokens-per-block 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any


def _shape(d: Any) -> Any:
    """Keys and value types of a (nested) dict: what a consumer relies on."""
    if isinstance(d, dict):
        return {k: _shape(v) for k, v in sorted(d.items()) if k not in ("blocks", "tokens")}
    return type(d).__name__


async def check(model: str, bs: int, eos: int) -> dict[str, Any]:
    from tensorrt_llm import LLM, SamplingParams
    from tensorrt_llm.llmapi import KvCacheConfig

    llm = LLM(model, backend="pytorch", skip_tokenizer_init=True, enable_iter_perf_stats=True,
              return_perf_metrics=True, max_seq_len=1024,
              kv_cache_config=KvCacheConfig(tokens_per_block=bs, enable_block_reuse=True,
                                            enable_partial_reuse=False, event_buffer_max_size=1024,
                                            free_gpu_memory_fraction=0.3))
    facts: dict[str, Any] = {}
    try:
        prompt = list(range(100, 100 + 3 * bs + 5))
        try:
            llm.generate_async(prompt, SamplingParams(max_tokens=2), streaming=True)
            facts["end_id_required"] = False
        except ValueError:
            facts["end_id_required"] = True
        seen: list[int] = []
        res = llm.generate_async(prompt, SamplingParams(end_id=eos, max_tokens=8, logprobs=2, ignore_eos=True),
                                 streaming=True)
        cumulative = True
        async for out in res:
            toks = list(out.outputs[0].token_ids)
            cumulative = cumulative and toks[:len(seen)] == seen
            seen = toks
        comp = out.outputs[0]
        facts["cumulative_token_ids"] = cumulative
        facts["finish_reason_length"] = comp.finish_reason
        facts["logprob_entry"] = type(comp.logprobs[0]).__name__ if comp.logprobs else None
        facts["logprob_entry_size"] = len(comp.logprobs[0]) if comp.logprobs and isinstance(comp.logprobs[0], dict) else None
        perf = getattr(comp, "request_perf_metrics", None)
        kvm = getattr(perf, "kv_cache_metrics", None)
        facts["perf_metrics_reused_blocks_first"] = getattr(kvm, "num_reused_blocks", None)
        again = llm.generate_async(prompt, SamplingParams(end_id=eos, max_tokens=2), streaming=True)
        async for out in again:
            pass
        kvm = getattr(getattr(out.outputs[0], "request_perf_metrics", None), "kv_cache_metrics", None)
        facts["perf_metrics_reused_blocks_repeat"] = getattr(kvm, "num_reused_blocks", None)
        # an EOS finish: is the end id kept in token_ids?
        fin = llm.generate_async(prompt, SamplingParams(end_id=eos, max_tokens=600, temperature=1.0, top_k=50),
                                 streaming=True)
        async for out in fin:
            pass
        c = out.outputs[0]
        facts["eos_finish"] = {"finish_reason": c.finish_reason, "stop_reason": c.stop_reason,
                               "end_id_in_token_ids": eos in c.token_ids, "length": len(c.token_ids)}
        cancel = llm.generate_async(prompt, SamplingParams(end_id=eos, max_tokens=500, ignore_eos=True),
                                    streaming=True)
        async for out in cancel:
            out.abort()
        facts["cancelled_finish_reason"] = out.outputs[0].finish_reason
        events = [e async for e in llm.get_kv_cache_events_async(timeout=1)]
        facts["event_types"] = sorted({e["data"]["type"] for e in events})
        facts["event_keys"] = sorted({k for e in events for k in e})
        stored = [e for e in events if e["data"]["type"] == "stored"]
        facts["stored_event_shape"] = _shape(stored[0]) if stored else None
        facts["stored_block_keys"] = sorted(stored[0]["data"]["blocks"][0]) if stored else None
        facts["stored_token_keys"] = sorted(stored[0]["data"]["blocks"][0]["tokens"][0]) if stored else None
        facts["partial_blocks_stored"] = any(len(b["tokens"]) < bs for e in stored for b in e["data"]["blocks"])
        facts["hash_over_2_63"] = any(b["block_hash"] >= 1 << 63 for e in stored for b in e["data"]["blocks"])
        stats = [s async for s in llm.get_stats_async(timeout=1)]
        facts["stats_count"] = len(stats)
        facts["stats_shape"] = _shape(stats[-1]) if stats else None
    finally:
        llm.shutdown()
    return facts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tokens-per-block", type=int, default=32)
    ap.add_argument("--eos", type=int, default=None, help="end token id (default: the model config's)")
    a = ap.parse_args()
    eos = a.eos
    if eos is None:
        from pathlib import Path

        cfg = json.loads((Path(a.model) / "config.json").read_text())
        e = cfg.get("eos_token_id")
        eos = e[0] if isinstance(e, list) else e
    facts = asyncio.run(check(a.model, a.tokens_per_block, int(eos)))
    json.dump(facts, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
