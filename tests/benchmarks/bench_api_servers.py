"""dynamo-mono with --api-server-count N vs NVIDIA Dynamo 1.6.1 (frontend + mocker): req/s, server CPU per request
(all processes) and RSS, engine free, streaming chat ISL 512 / OSL 64, runs alternated.

Installs nothing; Dynamo comes from its own venv (--dynamo-python, $DYNAMO_PYTHON, default /tmp/dynvenv/bin/python)
and is started exactly as tests/benchmarks/bench_vs_dynamo.py starts it.

    # this 2-core machine: nothing pinned (every server may use both cores), then pinned (server CPU 0, client CPU 1)
    python tests/benchmarks/bench_api_servers.py --counts 1,2 --rounds 2
    python tests/benchmarks/bench_api_servers.py --counts 1 --server-cpus 0 --client-cpus 1
    # a many-core machine (16 cores): servers on 0-7, the clients on 8-15, N = 1, 2, 4, 8
    python tests/benchmarks/bench_api_servers.py --counts 1,2,4,8 --server-cpus 0-7 --client-cpus 8-15 \\
        --clients 4 --concurrency 256 --requests 16000 --memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from dynamo_mono.assets import TINY_CHATML_DIR
from dynamo_mono.bench import BenchConfig, Dist, arun_benchmark
from dynamo_mono.bench.procstat import cpu_seconds, descendants
from dynamo_mono.bench.workload import WordPool

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.benchmarks.bench_vs_dynamo import MODEL, Servers, _wait_models, rss_in_flight, start_dynamo  # noqa: E402


class PinnedServers(Servers):
    """Servers whose processes run under `taskset -c CPUS` (none: unpinned)."""

    cpus: str | None = None

    def _spawn(self, cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        if self.cpus:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        p = subprocess.Popen(cmd, stdout=open(self.tmp / log, "wb"), stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        self.procs.append(p)
        return p


def start_mono(count: int, cpus: str | None, speedup: float = 0) -> Servers:
    s = PinnedServers(f"dynamo-mono-n{count}", False)
    s.cpus = cpus
    ready = s.tmp / "ready"
    s._spawn([sys.executable, "-m", "dynamo_mono.cli", "serve", "--model", str(TINY_CHATML_DIR),
              "--served-model-name", MODEL, "--speedup-ratio", str(speedup), "--port", "0",
              "--ready-file", str(ready), "--no-anthropic-api", "--log-level", "warning",
              "--api-server-count", str(count)], "serve.log")
    deadline = time.monotonic() + 120
    while not (ready.exists() and ready.read_text().strip()):
        if s.procs[0].poll() is not None or time.monotonic() > deadline:
            log = (s.tmp / "serve.log").read_text(errors="replace")[-2000:]
            s.stop()
            raise RuntimeError(f"dynamo-mono serve did not start:\n{log}")
        time.sleep(0.05)
    s.url = "http://" + ready.read_text().strip()
    _wait_models(s.url)
    return s


def start_dyn(python: str, cpus: str | None) -> Servers:
    import tests.benchmarks.bench_vs_dynamo as bvd

    orig = bvd.Servers
    bvd.Servers = type("DynServers", (PinnedServers,), {"cpus": cpus})  # start_dynamo builds its Servers from here
    try:
        return start_dynamo(python, 1000, False)  # Dynamo's mocker: 1000 = free (its 0 behaves like 1)
    finally:
        bvd.Servers = orig


def _client(args: tuple) -> dict:
    """One client process: its share of the requests at its share of the concurrency."""
    url, concurrency, n, warmup, cpus = args
    if cpus:
        os.sched_setaffinity(0, cpus)
    from dynamo_mono.uvloop_setup import run

    cfg = BenchConfig(url=url, model=MODEL, api="chat", stream=True, concurrency=concurrency, num_requests=n,
                      warmup=warmup, isl=Dist("fixed", 512), osl=Dist("fixed", 64))
    r = run(arun_benchmark(cfg, pool=WordPool(str(TINY_CHATML_DIR))))
    return {"ok": r.completed, "failed": r.failed, "errors": r.error_samples[:3],
            "duration_s": r.duration_s, "ttft_p50": r.ttft_ms["p50"]}


def parse_cpus(spec: str | None) -> set[int] | None:
    if not spec:
        return None
    out: set[int] = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def measure(s: Servers, args: argparse.Namespace) -> dict:
    """req/s over all clients and server CPU ms per request of every server process."""
    k = args.clients
    cpus = parse_cpus(args.client_cpus)
    jobs = [(s.url, args.concurrency // k, args.requests // k, args.warmup // k, cpus) for _ in range(k)]
    pids = s.pids
    with multiprocessing.get_context("spawn").Pool(k) as pool:
        pool.map(_client, [(s.url, args.concurrency // k, args.warmup // k or 8, 0, cpus) for _ in range(k)])  # warm
        cpu0 = cpu_seconds(pids)
        t0 = time.perf_counter()
        results = pool.map(_client, jobs)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - cpu0
    ok = sum(r["ok"] for r in results)
    if any(r["failed"] for r in results):
        raise RuntimeError(f"{s.name}: failures {[r['errors'] for r in results]}")
    span = max(r["duration_s"] for r in results)
    return {"req_per_s": ok / span, "server_cpu_ms_per_req": cpu * 1000 / ok, "server_cpu_util": cpu / wall,
            "procs": len(descendants(pids)), "ttft_p50_ms": sorted(r["ttft_p50"] for r in results)[k // 2]}


async def memory(count: int, cpus: str | None, inflight: int) -> dict:
    s = start_mono(count, cpus, speedup=1)
    try:
        idle, busy = await rss_in_flight(s, WordPool(str(TINY_CHATML_DIR)), inflight)
    finally:
        s.stop()
    return {"idle_mb": idle / 2**20, "busy_mb": busy / 2**20, "per_stream_kb": (busy - idle) / inflight / 1024}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dynamo-python", default=os.environ.get("DYNAMO_PYTHON", "/tmp/dynvenv/bin/python"))
    p.add_argument("--counts", default="1,2", help="--api-server-count values to measure")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds (each config once per round)")
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--warmup", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--clients", type=int, default=1, help="client processes (a many-core run needs several)")
    p.add_argument("--server-cpus", default=None, help="taskset list for every server process (default: unpinned)")
    p.add_argument("--client-cpus", default=None, help="CPUs of the client processes (default: unpinned)")
    p.add_argument("--no-dynamo", action="store_true")
    p.add_argument("--memory", action="store_true", help="also RSS idle and per in-flight stream for each N")
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--json")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    configs = [f"mono-n{c}" for c in counts] + ([] if args.no_dynamo else ["dynamo"])
    if not args.no_dynamo and not Path(args.dynamo_python).exists():
        print(f"Dynamo python {args.dynamo_python} not found (see docs/performance.md)", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for rnd in range(args.rounds):
        order = configs if rnd % 2 == 0 else configs[::-1]  # alternate, so drift of the machine hits both sides
        for name in order:
            s = (start_dyn(args.dynamo_python, args.server_cpus) if name == "dynamo"
                 else start_mono(int(name[6:]), args.server_cpus))
            try:
                r = measure(s, args)
            finally:
                s.stop()
            runs[name].append(r)
            print(f"round {rnd + 1} {name:10s} {r['req_per_s']:8.1f} req/s  server CPU {r['server_cpu_ms_per_req']:.3f} "
                  f"ms/req ({r['server_cpu_util'] * 100:.0f} %), {r['procs']} processes", flush=True)
    mem = {}
    if args.memory:
        for c in counts:
            mem[c] = asyncio.run(memory(c, args.server_cpus, args.inflight))
    if not args.rounds:
        configs = []
    print(f"\nstreaming chat ISL 512 OSL 64, c={args.concurrency}, engine free, {args.requests} requests x "
          f"{args.rounds} rounds alternated; servers on CPUs {args.server_cpus or 'any'}, "
          f"{args.clients} client(s) on {args.client_cpus or 'any'}; load before: {os.getloadavg()[0]:.2f}")
    print(f"{'setup':12s} {'req/s (mean)':>12s} {'runs':>22s} {'vs Dynamo':>10s} {'server CPU ms/req':>18s} {'util':>6s}")
    dyn = sum(r["req_per_s"] for r in runs.get("dynamo", [])) / max(1, len(runs.get("dynamo", []))) or None
    for name in configs:
        rs = runs[name]
        mean = sum(r["req_per_s"] for r in rs) / len(rs)
        cpu = sum(r["server_cpu_ms_per_req"] for r in rs) / len(rs)
        util = sum(r["server_cpu_util"] for r in rs) / len(rs)
        ratio = f"{mean / dyn:.2f}x" if dyn and name != "dynamo" else ""
        print(f"{name:12s} {mean:12.1f} {' / '.join('%.0f' % r['req_per_s'] for r in rs):>22s} {ratio:>10s} "
              f"{cpu:18.3f} {util * 100:5.0f}%")
    for c, m in mem.items():
        print(f"memory N={c}: idle (after warm-up) {m['idle_mb']:.1f} MB all processes, {args.inflight} streams in flight "
              f"{m['busy_mb']:.1f} MB => {m['per_stream_kb']:.1f} KB per stream")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "memory": mem, "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
