"""Disaggregated prefill / decode with vLLM on a GPU machine: greedy identity and agg vs disagg TTFT / ITL / tok/s.

Runs where vLLM (CUDA build), NIXL (nixl-cu12 / nixl-cu13 matching the CUDA of torch) and dynamo-mono with this
plugin are installed, with a small real model on local disk (no download: HF_HUB_OFFLINE=1). Starts one server
holding a vLLM decode instance and one `dynamo-mono worker` holding a vLLM prefill instance; the KV cache stays in
GPU memory (kv_buffer_device "cuda", NIXL registers it as VRAM; UCX moves it GPU to GPU, over NVLink / CUDA IPC
on one host). With two or more GPUs each instance gets its own (CUDA_VISIBLE_DEVICES 0 and 1); with one GPU both
share it (--gpu-memory-utilization 0.35 each).

Aggregated requests are pinned to the decode instance (nvext.backend_instance_id); disaggregated ones are routed
(prefill instance -> KV hand-off -> decode instance). Exits non-zero if any greedy output differs.

    python plugins/vllm/gpu_disagg_check.py --model /models/Qwen2.5-0.5B-Instruct [--prompts 4] [--osl 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

WORDS = ["river", "mountain", "signal", "harbor", "lantern", "orbit", "meadow", "engine", "canyon", "violet"]


def _gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _spawn(args: list[str], name: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    log = os.path.join(tempfile.mkdtemp(prefix=f"gpu-disagg-{name}-"), f"{name}.log")
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dynamo_mono.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, start_new_session=True)
    return proc, log


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M))


async def _one(session, url: str, model: str, prompt: str, osl: int, pin: int | None) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": osl, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    if pin is not None:
        body["nvext"] = {"backend_instance_id": pin}
    t0 = time.perf_counter()
    first = last = None
    text, tokens = [], 0
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
            for ch in chunk.get("choices") or []:
                if ch.get("text"):
                    now = time.perf_counter()
                    first = first if first is not None else now
                    last = now
                    text.append(ch["text"])
    return {"ttft": first - t0, "itl": (last - first) / max(1, tokens - 1), "tokens": tokens, "text": "".join(text)}


async def _run(url: str, model: str, prompts: list[str], osl: int, c: int, pin: int | None) -> dict:
    import aiohttp

    sem = asyncio.Semaphore(c)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
        async def one(p: str) -> dict:
            async with sem:
                return await _one(session, url, model, p, osl, pin)

        t0 = time.perf_counter()
        res = await asyncio.gather(*(one(p) for p in prompts))
        wall = time.perf_counter() - t0
    ttft = sorted(r["ttft"] for r in res)
    return {"ttft_ms": 1000 * ttft[len(ttft) // 2], "itl_ms": 1000 * sum(r["itl"] for r in res) / len(res),
            "tok_s": sum(r["tokens"] for r in res) / wall, "texts": [r["text"] for r in res]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="local Hugging Face model directory (a small chat model)")
    ap.add_argument("--prompts", type=int, default=4, help="prompts of the greedy identity check")
    ap.add_argument("--isl-words", type=int, default=400)
    ap.add_argument("--osl", type=int, default=64)
    ap.add_argument("--requests", type=int, default=32, help="requests per (mode, concurrency) row")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for both instances")
    a = ap.parse_args()
    gpus = _gpus()
    if gpus == 0:
        print("no GPU found (nvidia-smi -L); on CPU run tests/benchmarks/bench_vllm_disagg.py instead")
        return 2
    env = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "NIXL_LOG_LEVEL": "WARN"}
    share = [] if gpus > 1 else ["--gpu-memory-utilization", "0.35"]
    flags = ["--engine", "vllm", "--model", a.model, "--served-model-name", "m", "--max-model-len", "4096", *share]
    ready = os.path.join(tempfile.mkdtemp(prefix="gpu-disagg-"), "ready")
    token = "gpu-disagg-check"
    srv, srv_log = _spawn(["serve", "--host", "127.0.0.1", "--port", "0", "--ready-file", ready, "--worker-token",
                           token, *flags, "--num-instances", "1", "--disaggregation-mode", "decode"], "server",
                          {**env, "CUDA_VISIBLE_DEVICES": "0"})
    procs = [srv]
    try:
        deadline = time.monotonic() + a.timeout
        while not os.path.exists(ready):
            if srv.poll() is not None or time.monotonic() > deadline:
                print(open(srv_log).read()[-4000:])
                return 1
            time.sleep(0.5)
        host, port = open(ready).read().strip().rsplit(":", 1)
        url = f"http://{host}:{port}"
        worker, worker_log = _spawn(["worker", "--connect", url, "--worker-token", token, *flags,
                                     "--disaggregation-mode", "prefill"], "prefill",
                                    {**env, "CUDA_VISIBLE_DEVICES": "1" if gpus > 1 else "0"})
        procs.append(worker)
        while True:
            insts = _get(url + "/health").get("instances", [])
            if len(insts) == 2 and all(i["state"] == "ready" for i in insts):
                break
            if worker.poll() is not None or time.monotonic() > deadline:
                print(open(worker_log).read()[-4000:])
                return 1
            time.sleep(0.5)
        decode = next(i["worker_id"] for i in insts if i["disaggregation_mode"] == "decode")
        rng = random.Random(0)

        def prompts(n: int) -> list[str]:
            return [" ".join(rng.choice(WORDS) for _ in range(a.isl_words)) for _ in range(n)]

        check = prompts(a.prompts)
        dis = asyncio.run(_run(url, "m", check, a.osl, 1, None))["texts"]  # first: nothing cached on decode
        agg = asyncio.run(_run(url, "m", check, a.osl, 1, decode))["texts"]
        same = sum(x == y for x, y in zip(dis, agg))
        b0 = _metric(url, "dynamo_kv_transfer_bytes_total")
        r0 = _metric(url, "dynamo_frontend_disagg_remote_prefills_total")
        rows = {(mode, c): asyncio.run(_run(url, "m", prompts(a.requests), a.osl, c, pin))
                for c in (1, 8) for mode, pin in (("agg", decode), ("disagg", None))}
        time.sleep(1.0)  # the decode instance's connector stats arrive with its next scheduler step
        moved = _metric(url, "dynamo_kv_transfer_bytes_total") - b0
        remote = _metric(url, "dynamo_frontend_disagg_remote_prefills_total") - r0
        print(f"GPUs: {gpus}; greedy output identical agg vs disagg: {same}/{len(check)}")
        print(f"{'mode':>7} {'c':>2} {'TTFT p50 ms':>12} {'ITL ms':>8} {'tok/s':>8}")
        for (mode, c), r in rows.items():
            print(f"{mode:>7} {c:>2} {r['ttft_ms']:>12.1f} {r['itl_ms']:>8.2f} {r['tok_s']:>8.1f}")
        print(f"KV moved per disaggregated request: {moved / max(1, remote) / 1024:.1f} KiB ({remote:.0f} requests)")
        return 0 if same == len(check) else 1
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
