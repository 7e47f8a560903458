"""dynamo-mono against itself: two checkouts (e.g. before / after a change) on the same workload, side by side.

Starts `dynamo-mono serve` from each checkout in turn (cwd = the checkout, so `python -m dynamo_mono.cli` runs
its code), pinned to CPU 0 with the client on CPU 1, and alternates rounds A, B, A, B, ... so drift of the
machine hits both. Prints req/s and server CPU ms per request at one concurrency, each side's median over the
rounds and the ratio B / A.

    python3 tests/benchmarks/bench_ab.py --a /path/to/old-checkout --b . [--rounds 3] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dynamo_mono.bench import BenchConfig, Dist, arun_benchmark
from dynamo_mono.bench.workload import WordPool

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.benchmarks.bench_vs_dynamo import MODEL, Servers, _wait_models  # noqa: E402

from dynamo_mono.assets import TINY_CHATML_DIR  # noqa: E402


def start(checkout: Path, name: str) -> Servers:
    s = Servers(name, pin=True)
    ready = s.tmp / "ready"
    cmd = [sys.executable, "-m", "dynamo_mono.cli", "serve", "--model", str(TINY_CHATML_DIR),
           "--served-model-name", MODEL, "--speedup-ratio", "0", "--port", "0", "--ready-file", str(ready),
           "--no-anthropic-api", "--log-level", "warning"]
    s.procs.append(subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=checkout, start_new_session=True,
                                    stdout=open(s.tmp / "serve.log", "wb"), stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text().strip()):
        if s.procs[0].poll() is not None or time.monotonic() > deadline:
            log = (s.tmp / "serve.log").read_text(errors="replace")[-2000:]
            s.stop()
            raise RuntimeError(f"{name}: serve did not start:\n{log}")
        time.sleep(0.05)
    s.url = "http://" + ready.read_text().strip()
    _wait_models(s.url)
    return s


async def one_round(s: Servers, pool: WordPool, concurrency: int, n: int) -> tuple[float, float]:
    cfg = BenchConfig(url=s.url, model=MODEL, api="chat", stream=True, concurrency=concurrency, num_requests=n,
                      warmup=min(200, n // 5), isl=Dist("fixed", 512), osl=Dist("fixed", 64), server_pids=s.pids)
    r = await arun_benchmark(cfg, pool=pool)
    if r.failed:
        raise RuntimeError(f"{s.name}: {r.failed} failed: {r.error_samples}")
    return r.req_per_s, r.server_cpu_ms_per_req


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="checkout A (the reference)")
    ap.add_argument("--b", type=Path, required=True, help="checkout B")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    pool = WordPool(str(TINY_CHATML_DIR))
    res: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for name, checkout in (("A", args.a), ("B", args.b)):
            s = start(checkout.resolve(), name)
            try:
                res[name].append(asyncio.run(one_round(s, pool, args.concurrency, args.requests)))
            finally:
                s.stop()
    med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    print(f"chat, streaming, ISL 512, OSL 64, c={args.concurrency}, engine free; {args.rounds} rounds alternated")
    for k in ("A", "B"):
        rounds = ", ".join(f"{r:.1f}" for r, _ in res[k])
        print(f"{k} {getattr(args, k.lower())}: req/s {med[k][0]:.1f} (rounds {rounds}), "
              f"server CPU {med[k][1]:.3f} ms/request")
    print(f"B / A: req/s x{med['B'][0] / med['A'][0]:.3f}, server CPU per request x{med['B'][1] / med['A'][1]:.3f}")


if __name__ == "__main__":
    main()
