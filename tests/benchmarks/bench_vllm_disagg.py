"""Aggregated vs disaggregated vLLM serving on one server: greedy identity, TTFT / ITL / tok/s at c=1 and c=8, KV bytes.

Needs the vLLM CPU build and NIXL (plugins/vllm/install-cpu.sh, docs/vllm.md). Starts one server holding a vLLM decode
instance and one `dynamo-mono worker` holding a vLLM prefill instance (tiny random Llama, host-memory KV moved by
vLLM's NixlConnector over UCX). Aggregated requests are pinned to the decode instance (nvext.backend_instance_id:
no prefill instance takes part); disaggregated ones are routed (prefill instance -> KV hand-off -> decode instance).
Every request has its own prompt (nothing cached), streamed completions, greedy, fixed output length.

    python3 tests/benchmarks/bench_vllm_disagg.py [--isl-words 200] [--osl 32] [--requests-c1 6] [--requests-c8 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.vllm.conftest import VLLM_ENV  # noqa: E402
from tests.worker.harness import TOKEN, get_json, start_server, start_worker, wait_until  # noqa: E402

FLAGS = ["--engine", "vllm", "--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "2048",
         "--num-gpu-blocks-override", "512", "--served-model-name", "tiny"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


def _prompt(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(n_words))


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M))


async def _one(session, url: str, prompt: str, osl: int, pin: int | None) -> dict:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": osl, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    if pin is not None:
        body["nvext"] = {"backend_instance_id": pin}
    t0 = time.perf_counter()
    first = last = None
    text, tokens, prompt_tokens = [], 0, 0
    async with session.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
                prompt_tokens = chunk["usage"]["prompt_tokens"]
            for ch in chunk.get("choices") or []:
                if ch.get("text"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    text.append(ch["text"])
    return {"ttft": first - t0, "itl": (last - first) / max(1, tokens - 1), "tokens": tokens, "text": "".join(text),
            "isl": prompt_tokens}


async def _run(url: str, prompts: list[str], osl: int, concurrency: int, pin: int | None) -> dict:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
        async def task(p: str) -> dict:
            async with sem:
                return await _one(session, url, p, osl, pin)

        t0 = time.perf_counter()
        res = await asyncio.gather(*(task(p) for p in prompts))
        wall = time.perf_counter() - t0
    ttft = sorted(r["ttft"] for r in res)
    return {"ttft_p50_ms": 1000 * ttft[len(ttft) // 2], "itl_ms": 1000 * sum(r["itl"] for r in res) / len(res),
            "tok_s": sum(r["tokens"] for r in res) / wall, "n": len(res), "isl": sum(r["isl"] for r in res) / len(res)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isl-words", type=int, default=200, help="words per prompt (~2 tokens each)")
    ap.add_argument("--osl", type=int, default=32)
    ap.add_argument("--requests-c1", type=int, default=6)
    ap.add_argument("--requests-c8", type=int, default=16)
    ap.add_argument("--identity-prompts", type=int, default=3)
    a = ap.parse_args()
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    os.environ.update({**VLLM_ENV, "NIXL_LOG_LEVEL": "WARN"})
    model = build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-v1", seed=0)
    flags = [*FLAGS, "--model", str(model)]
    srv = start_server([*flags, "--num-instances", "1", "--disaggregation-mode", "decode", "--router-mode", "kv"],
                       token=TOKEN, timeout=300)
    worker = start_worker(srv.url, [*flags, "--disaggregation-mode", "prefill"], name="prefill")
    try:
        insts = wait_until(lambda: (lambda b: b if len(b) == 2 and all(i["state"] == "ready" for i in b) else None)(
            (get_json(srv.url + "/health")[1] or {}).get("instances", [])), 300, "the prefill worker to join", 0.5)
        roles = {i["disaggregation_mode"]: i["worker_id"] for i in insts}
        decode = roles["decode"]
        rng = random.Random(0)
        # Greedy identity: disaggregated first (the decode instance pulls the whole prompt), then aggregated.
        same = 0
        for _ in range(a.identity_prompts):
            p = _prompt(rng, a.isl_words)
            text_d = asyncio.run(_one_text(srv.url, p, a.osl, None))
            text_a = asyncio.run(_one_text(srv.url, p, a.osl, decode))
            same += text_d == text_a
        for pin in (decode, None):  # warm both paths (first-request costs) before measuring
            asyncio.run(_run(srv.url, [_prompt(rng, a.isl_words) for _ in range(2)], a.osl, 2, pin))
        rows = {}
        b0, r0 = _metric(srv.url, "dynamo_kv_transfer_bytes_total"), _metric(
            srv.url, "dynamo_frontend_disagg_remote_prefills_total")
        for c, n in ((1, a.requests_c1), (8, a.requests_c8)):
            for mode, pin in (("agg", decode), ("disagg", None)):
                prompts = [_prompt(rng, a.isl_words) for _ in range(n)]
                rows[(mode, c)] = asyncio.run(_run(srv.url, prompts, a.osl, c, pin))
        moved = wait_until(lambda: (lambda b: b if b > b0 else None)(
            _metric(srv.url, "dynamo_kv_transfer_bytes_total")), 60, "KV bytes reported") - b0
        remote = _metric(srv.url, "dynamo_frontend_disagg_remote_prefills_total") - r0
        fallbacks = _metric(srv.url, "dynamo_frontend_disagg_local_prefill_fallbacks_total")
    finally:
        worker.stop()
        srv.stop(timeout=30)
    isl = sum(r["isl"] for r in rows.values()) / len(rows)
    print(f"greedy output identical agg vs disagg: {same}/{a.identity_prompts} prompts "
          f"(ISL {isl:.0f} tokens, OSL {a.osl}, tiny Llama: 2 layers, 4 KV heads x 32, float32, 32-token blocks)")
    print(f"{'mode':>7} {'c':>2} {'reqs':>5} {'TTFT p50 ms':>12} {'ITL ms':>8} {'tok/s':>8}")
    for (mode, c), r in rows.items():
        print(f"{mode:>7} {c:>2} {r['n']:>5} {r['ttft_p50_ms']:>12.1f} {r['itl_ms']:>8.2f} {r['tok_s']:>8.1f}")
    for c in (1, 8):
        ag, dg = rows[("agg", c)], rows[("disagg", c)]
        print(f"c={c}: disagg/agg TTFT {dg['ttft_p50_ms'] / ag['ttft_p50_ms']:.2f}x, ITL "
              f"{dg['itl_ms'] / ag['itl_ms']:.2f}x, tok/s {dg['tok_s'] / ag['tok_s']:.2f}x")
    print(f"remote prefills {remote:.0f}, local-prefill fallbacks {fallbacks:.0f}, KV moved {moved / 1e6:.2f} MB = "
          f"{moved / max(1, remote) / 1024:.1f} KiB per disaggregated request")


async def _one_text(url: str, prompt: str, osl: int, pin: int | None) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return (await _one(session, url, prompt, osl, pin))["text"]


if __name__ == "__main__":
    main()
