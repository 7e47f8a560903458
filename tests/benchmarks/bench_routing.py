"""Routing evaluation: prefix hit rate, TTFT and throughput of kv vs round-robin vs random routing.

Starts `dynamo-mono serve --num-instances 4` (mocker at realistic speed) once per router mode and drives
it with `dynamo-mono bench`'s prefix-group workload (G groups x U users share a G-specific prefix).

Run: python tests/benchmarks/bench_routing.py [--modes kv,round-robin,random] [--groups 16] [--users 8]
     [--prefix 2048] [--suffix 256] [--osl 64] [--concurrency 32] [--speedup 1]
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance.server import start_server  # noqa: E402
from dynamo_mono.bench import BenchConfig, parse_dist, run_benchmark  # noqa: E402


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def evaluate(mode: str, a: argparse.Namespace) -> dict:
    srv = start_server(["--num-instances", str(a.instances), "--router-mode", mode, "--speedup-ratio", str(a.speedup),
                        "--block-size", str(a.block_size), "--max-model-len", str(a.prefix + a.suffix + a.osl + 64),
                        *shlex.split(a.server_args)])
    try:
        cfg = BenchConfig(url=srv.url, api="completions-tokens", concurrency=a.concurrency,
                          num_requests=a.groups * a.users, isl=parse_dist(str(a.prefix + a.suffix)),
                          osl=parse_dist(str(a.osl)), workload="prefix-groups", prefix_len=a.prefix,
                          num_groups=a.groups, server_pids=[srv.proc.pid], seed=a.seed)
        res = run_benchmark(cfg)
        text = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
        cached = metric_sum(text, "dynamo_frontend_cached_tokens_sum")
        prompt = metric_sum(text, "dynamo_frontend_input_sequence_tokens_sum")
        per_instance = {m.group(1): float(m.group(2)) for m in re.finditer(
            r'dynamo_component_router_requests_total{[^}]*worker_id="(\d+)"[^}]*} (\S+)', text)}
        return {"mode": mode, "hit_rate": cached / prompt if prompt else 0.0, "ttft_p50": res.ttft_ms["p50"],
                "ttft_p99": res.ttft_ms["p99"], "req_s": res.req_per_s, "errors": res.failed,
                "per_instance": per_instance}
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="kv,round-robin,random")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--groups", type=int, default=16)
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--prefix", type=int, default=2048)
    ap.add_argument("--suffix", type=int, default=256)
    ap.add_argument("--osl", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-args", default="", help="extra `dynamo-mono serve` arguments for every mode")
    a = ap.parse_args()
    rows = [evaluate(m, a) for m in a.modes.split(",")]
    print(f"\n{a.instances} mocker instances, speedup {a.speedup}, {a.groups} groups x {a.users} users, "
          f"prefix {a.prefix} + suffix {a.suffix} tokens, OSL {a.osl}, concurrency {a.concurrency}")
    print(f"{'mode':<12} {'hit rate':>9} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'req/s':>7} {'errors':>6}  per instance")
    for r in rows:
        print(f"{r['mode']:<12} {r['hit_rate']:>9.1%} {r['ttft_p50']:>12.1f} {r['ttft_p99']:>12.1f} "
              f"{r['req_s']:>7.2f} {r['errors']:>6}  {r['per_instance']}")


if __name__ == "__main__":
    main()
