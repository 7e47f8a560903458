"""dynamo-mono serve --engine vllm vs vLLM's own OpenAI server, same tiny model and flags: tok/s and TTFT ratios.

Needs the vLLM CPU build (plugins/vllm/install-cpu.sh). Builds the tiny random Llama (cached in the temp dir),
starts one server at a time (2-core machines), runs the same `dynamo-mono bench` workload (ISL 256, OSL 128,
streaming chat, c=1 and c=8) against each and prints the figures and the ratios.

    python3 tests/benchmarks/bench_vllm.py [--requests-c1 12] [--requests-c8 48]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance.server import start_server  # noqa: E402
from dynamo_mono.bench import BenchConfig, Dist, arun_benchmark  # noqa: E402
from tests.vllm.conftest import VLLM_ENV  # noqa: E402

FLAGS = ["--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "2048",
         "--num-gpu-blocks-override", "512"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_vllm(model: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = open(Path(tempfile.gettempdir()) / "bench_vllm_reference.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                             "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), *FLAGS],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **VLLM_ENV})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited; see {log.name}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("vLLM server not ready")


async def _bench(url: str, model: Path, concurrency: int, n: int) -> dict:
    cfg = BenchConfig(url=url, model="tiny", api="chat", stream=True, concurrency=concurrency, num_requests=n,
                      warmup=min(4, n), isl=Dist("fixed", 256), osl=Dist("fixed", 128), tokenizer=str(model))
    r = await arun_benchmark(cfg)
    if r.failed:
        raise RuntimeError(f"{url} c={concurrency}: {r.failed} failed: {r.error_samples}")
    return {"tok_s": r.output_tok_per_s, "ttft_p50": r.ttft_ms.get("p50"), "out": r.mean_output_tokens}


def _run_all(url: str, model: Path, sizes: dict[int, int]) -> dict[int, dict]:
    return {c: asyncio.run(_bench(url, model, c, n)) for c, n in sizes.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests-c1", type=int, default=12)
    ap.add_argument("--requests-c8", type=int, default=48)
    a = ap.parse_args()
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    model = build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-v1", seed=0)
    sizes = {1: a.requests_c1, 8: a.requests_c8}
    ours = start_server(["--engine", "vllm", "--model", str(model), "--served-model-name", "tiny", *FLAGS],
                        env=VLLM_ENV, timeout=300)
    try:
        mine = _run_all(ours.url, model, sizes)
    finally:
        ours.stop(timeout=30)
    proc, url = _start_vllm(model)
    try:
        ref = _run_all(url, model, sizes)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"{'c':>3} {'dynamo-mono tok/s':>18} {'vllm tok/s':>11} {'ratio':>6} "
          f"{'TTFT p50 ms ours':>17} {'vllm':>8} {'ratio':>6}")
    for c in sizes:
        m, r = mine[c], ref[c]
        print(f"{c:>3} {m['tok_s']:>18.1f} {r['tok_s']:>11.1f} {m['tok_s'] / r['tok_s']:>6.2f} "
              f"{m['ttft_p50']:>17.1f} {r['ttft_p50']:>8.1f} {m['ttft_p50'] / r['ttft_p50']:>6.2f}")


if __name__ == "__main__":
    main()
