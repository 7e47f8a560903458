"""Routing evaluation: prefix hit rate, TTFT and req/s of kv vs round-robin vs random vs the oracle, over seeds.

Starts a fresh `dynamo-mono serve --num-instances N` (mocker) per mode and seed and drives it with the
prefix-group workload of conformance/routing_workload.py (G groups x U users share a group prefix; with
--zipf S the group of each request is Zipf(S)-distributed). The oracle pins group g to instance g mod N.
Prints one row per mode: mean and spread (min-max) over seeds, and kv / oracle per seed.

Run: python tests/benchmarks/bench_routing.py [--modes kv,round-robin,random,oracle] [--seeds 0,1,2,3,4]
     [--groups 16] [--users 8] [--prefix 1024] [--suffix 128] [--osl 32] [--concurrency 16] [--speedup 1]
     [--zipf 0] [--server-args "..."] [--kv-args "..."]
Over-capacity example: --zipf 1.0 --groups 32 --server-args "--num-gpu-blocks-override 136"
(each instance caches about 4 prefixes of 16 blocks + the working set; 32 groups need 8 per instance).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance.routing_workload import RunResult, Workload, run  # noqa: E402
from conformance.server import start_server  # noqa: E402


def evaluate(mode: str, seed: int, a: argparse.Namespace) -> RunResult:
    router = "kv" if mode in ("kv", "oracle") else mode
    extra = shlex.split(a.kv_args) if mode == "kv" else []
    srv = start_server(["--engine", "mocker", "--num-instances", str(a.instances), "--router-mode", router,
                        "--speedup-ratio", str(a.speedup), "--block-size", str(a.block_size),
                        "--max-model-len", str(a.prefix + a.suffix + a.osl + 64),
                        *shlex.split(a.server_args), *extra])
    try:
        w = Workload(groups=a.groups, users=a.users, prefix_len=a.prefix, suffix_len=a.suffix, osl=a.osl,
                     seed=seed, zipf=a.zipf)
        return asyncio.run(run(srv.url, w, concurrency=a.concurrency, oracle=mode == "oracle"))
    finally:
        srv.stop()


def spread(xs: list[float], fmt: str) -> str:
    return f"{format(statistics.mean(xs), fmt)} ({format(min(xs), fmt)}-{format(max(xs), fmt)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="kv,round-robin,random,oracle")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--prefix", type=int, default=1024)
    ap.add_argument("--suffix", type=int, default=128)
    ap.add_argument("--osl", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--zipf", type=float, default=0.0, help="Zipf exponent of group popularity (0 = uniform)")
    ap.add_argument("--server-args", default="", help="extra `dynamo-mono serve` arguments for every mode")
    ap.add_argument("--kv-args", default="", help="extra arguments for the kv mode only")
    a = ap.parse_args()
    modes = a.modes.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    res: dict[str, list[RunResult]] = {m: [] for m in modes}
    for seed in seeds:  # modes alternate within a seed, so machine-load drift hits them alike
        for m in modes:
            r = evaluate(m, seed, a)
            res[m].append(r)
            print(f"seed {seed} {m:<12} hit {r.hit_rate:.3f} p50 {r.ttft_p50_ms:.1f} ms p99 {r.ttft_p99_ms:.1f} ms "
                  f"{r.req_s:.2f} req/s lost {r.lost_decisions:.0f}", flush=True)
    print(f"\n{a.instances} mocker instances, speedup {a.speedup}, {a.groups} groups x {a.users} users"
          f"{f' (zipf {a.zipf})' if a.zipf else ''}, prefix {a.prefix} + suffix {a.suffix} tokens, OSL {a.osl}, "
          f"concurrency {a.concurrency}, seeds {seeds}; mean (min-max)")
    print(f"{'mode':<12} {'hit rate':>20} {'TTFT p50 ms':>20} {'TTFT p99 ms':>22} {'req/s':>20}")
    for m in modes:
        rs = res[m]
        print(f"{m:<12} {spread([r.hit_rate for r in rs], '.3f'):>20} {spread([r.ttft_p50_ms for r in rs], '.1f'):>20} "
              f"{spread([r.ttft_p99_ms for r in rs], '.1f'):>22} {spread([r.req_s for r in rs], '.2f'):>20}")
    if "kv" in res and "oracle" in res:
        ratios = [k.hit_rate / o.hit_rate for k, o in zip(res["kv"], res["oracle"]) if o.hit_rate]
        print(f"kv / oracle hit rate per seed: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"mean {statistics.mean(ratios):.2f}, min {min(ratios):.2f}")


if __name__ == "__main__":
    main()
