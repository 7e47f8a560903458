"""dynamo-mono vs NVIDIA Dynamo 1.6.1 (frontend + mocker): throughput, TTFT, ITL, server CPU and memory, as ratios.

Installs nothing. Needs Dynamo in its own venv (see docs/performance.md), found via --dynamo-python or
$DYNAMO_PYTHON (default /tmp/dynvenv/bin/python). Starts both servers on ephemeral loopback ports with the same
tokenizer directory, runs the same `dynamo-mono bench` workload against each and prints the figures.

    python3 tests/benchmarks/bench_vs_dynamo.py [--requests 2000] [--no-pin] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np

from dynamo_mono.assets import TINY_CHATML_DIR
from dynamo_mono.bench import BenchConfig, BenchResult, Dist, arun_benchmark
from dynamo_mono.bench.procstat import descendants, rss_bytes
from dynamo_mono.bench.workload import WordPool
from mocker.perf_model import PerfModel

MODEL = "tiny-chatml"
SERVER_CPU, CLIENT_CPU = 0, 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_models(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if MODEL in r.read().decode():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not list {MODEL} within {timeout}s")


class Servers:
    """Start / stop one server stack; `pids` are every process whose CPU is charged to it."""

    def __init__(self, name: str, pin: bool) -> None:
        self.name, self.pin = name, pin
        self.procs: list[subprocess.Popen] = []
        self.url = ""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))

    def _spawn(self, cmd: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        if self.pin:
            cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
        p = subprocess.Popen(cmd, stdout=open(self.tmp / log, "wb"), stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def rss(self) -> int:
        return sum(rss_bytes(p) for p in descendants(self.pids))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_shared_profile(path: Path) -> Path:
    """One engine timing profile (mocker-format NPZ, the keys both mockers read from --planner-profile-data),
    sampled from our mocker's default formulas (a 7-8B model on one H100), so that at speedup 1 both servers
    simulate the same engine and the latencies compare the frontends and schedulers, not two timing models."""
    pm = PerfModel()
    isl = np.linspace(16, 16384, 128)
    kv = np.linspace(0, 262144, 64)
    ctx = np.linspace(1, 16384, 64)
    batch = np.maximum(1.0, kv[:, None] / ctx[None, :])
    itl = pm.decode_base_ms + batch * pm.decode_ms_per_seq + kv[:, None] * pm.decode_ms_per_kv_token
    np.savez(path, prefill_isl=isl, prefill_ttft_ms=[pm.prefill_base_ms + pm.prefill_ms(int(n), 0) for n in isl],
             decode_active_kv_tokens=kv, decode_context_length=ctx, decode_itl=itl)
    return path


def start_mono(speedup: float, pin: bool, profile: Path | None = None) -> Servers:
    s = Servers("dynamo-mono", pin)
    ready = s.tmp / "ready"
    # The Anthropic API is off on both sides (Dynamo's default), so the two route tables match.
    s._spawn([sys.executable, "-m", "dynamo_mono.cli", "serve", "--model", str(TINY_CHATML_DIR),
              "--served-model-name", MODEL, "--speedup-ratio", str(speedup), "--port", "0",
              "--ready-file", str(ready), "--no-anthropic-api", "--log-level", "warning",
              *(["--planner-profile-data", str(profile)] if profile else [])], "serve.log")
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text().strip()):
        if s.procs[0].poll() is not None or time.monotonic() > deadline:
            log = (s.tmp / "serve.log").read_text(errors="replace")[-2000:]
            s.stop()
            raise RuntimeError(f"dynamo-mono serve did not start:\n{log}")
        time.sleep(0.05)
    s.url = "http://" + ready.read_text().strip()
    _wait_models(s.url)
    return s


def start_dynamo(python: str, speedup: float, pin: bool, profile: Path | None = None) -> Servers:
    s = Servers("dynamo", pin)
    port = _free_port()
    env = dict(os.environ, DYN_FILE_KV=str(s.tmp / "kv"), DYN_LOG="warn")
    common = ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"]
    s._spawn([python, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
              "--router-mode", "round-robin", *common], "frontend.log", env)
    s._spawn([python, "-m", "dynamo.mocker", "--model-path", str(TINY_CHATML_DIR), "--model-name", MODEL,
              "--speedup-ratio", str(speedup), *common,
              *(["--planner-profile-data", str(profile)] if profile else [])], "mocker.log", env)
    s.url = f"http://127.0.0.1:{port}"
    try:
        _wait_models(s.url)
    except RuntimeError:
        logs = "".join((s.tmp / f).read_text(errors="replace")[-1500:] for f in ("frontend.log", "mocker.log"))
        s.stop()
        raise RuntimeError(f"Dynamo did not start:\n{logs}") from None
    return s


async def bench(s: Servers, pool: WordPool, concurrency: int, n: int, warmup: int) -> BenchResult:
    cfg = BenchConfig(url=s.url, model=MODEL, api="chat", stream=True, concurrency=concurrency, num_requests=n,
                      warmup=warmup, isl=Dist("fixed", 512), osl=Dist("fixed", 64), server_pids=s.pids)
    r = await arun_benchmark(cfg, pool=pool)
    if r.failed:
        raise RuntimeError(f"{s.name} c={concurrency}: {r.failed} failed: {r.error_samples}")
    return r


async def rss_in_flight(s: Servers, pool: WordPool, n: int) -> tuple[int, int]:
    """(RSS after warm-up with nothing in flight, RSS with n streaming requests in flight) of all server processes."""
    await bench(s, pool, 16, 64, 0)  # warm allocator / caches so the idle figure is the steady state
    await asyncio.sleep(0.5)
    idle = s.rss()
    prompt = "".join(pool.words[i % len(pool.words)] for i in range(120))
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4000,
                       "ignore_eos": True, "stream": True}).encode()
    started = 0
    all_started = asyncio.Event()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal started
        async with session.post(s.url + "/v1/chat/completions", data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            first = True
            async for _ in resp.content.iter_any():
                if first:
                    first = False
                    started += 1
                    if started == n:
                        all_started.set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks = [asyncio.ensure_future(one(session)) for _ in range(n)]
        try:
            await asyncio.wait_for(all_started.wait(), 60)
            await asyncio.sleep(1.0)
            busy = s.rss()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return idle, busy


def _pct(r: BenchResult, key: str) -> str:
    d = getattr(r, key)
    return f"{d['p50']:.2f} / {d['p90']:.2f} / {d['p99']:.2f}"


async def main_async(args: argparse.Namespace) -> dict:
    pool = WordPool(str(TINY_CHATML_DIR))
    out: dict = {"pinned": args.pin, "requests": args.requests}

    # 1. Engine effectively free: ours --speedup-ratio 0, Dynamo's mocker 1000 (its 0 behaves like 1).
    for name, start in (("dynamo-mono", lambda: start_mono(0, args.pin)),
                        ("dynamo", lambda: start_dynamo(args.dynamo_python, 1000, args.pin))):
        s = start()
        try:
            idle_rss = s.rss()
            c64 = await bench(s, pool, 64, args.requests, args.warmup)
            c1 = await bench(s, pool, 1, max(args.requests // 4, 50), 20)
            out[name] = {"free": {"c64": c64.to_dict(), "c1": c1.to_dict(), "idle_rss_at_start_mb": idle_rss / 2**20}}
        finally:
            s.stop()

    # 2. Both engines at speedup 1 with the same timing profile: latency percentiles at c=16 and c=64, then
    #    memory with requests in flight.
    profile_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    profile = write_shared_profile(profile_dir / "perf_data.npz")
    try:
        for name, start in (("dynamo-mono", lambda: start_mono(1, args.pin, profile)),
                            ("dynamo", lambda: start_dynamo(args.dynamo_python, 1, args.pin, profile))):
            s = start()
            try:
                c16 = await bench(s, pool, 16, max(args.requests // 8, 64), 16)
                c64 = await bench(s, pool, 64, max(args.requests // 4, 128), 64)
                idle, busy = await rss_in_flight(s, pool, args.inflight)
                out[name]["speedup1"] = {"c16": c16.to_dict(), "c64": c64.to_dict()}
                out[name]["memory"] = {"idle_mb": idle / 2**20, "inflight": args.inflight, "busy_mb": busy / 2**20,
                                       "per_request_kb": (busy - idle) / args.inflight / 1024}
            finally:
                s.stop()
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)
    return out


def report(out: dict) -> str:
    m, d = out["dynamo-mono"], out["dynamo"]
    lines = [f"workload: chat, streaming, ISL 512, OSL 64, ignore_eos; servers pinned to CPU {SERVER_CPU}, "
             f"client to CPU {CLIENT_CPU}" if out["pinned"] else "workload: chat, streaming, ISL 512, OSL 64, ignore_eos; unpinned"]

    def row(label: str, a: float, b: float, goal: str, better_low: bool = False) -> None:
        ratio = (b / a if better_low else a / b) if a and b else float("nan")
        lines.append(f"{label:44s} {a:12.3f} {b:12.3f}   x{ratio:6.2f} better   {goal}")

    lines.append(f"{'engine effectively free':44s} {'dynamo-mono':>12s} {'dynamo':>12s}")
    mf, df = m["free"], d["free"]
    row("req/s at c=64", mf["c64"]["req_per_s"], df["c64"]["req_per_s"], "goal: ours >= 1.5x")
    row("output tok/s at c=64", mf["c64"]["output_tok_per_s"], df["c64"]["output_tok_per_s"], "")
    row("TTFT p50 ms at c=1", mf["c1"]["ttft_ms"]["p50"], df["c1"]["ttft_ms"]["p50"], "goal: ours <= 1.5 ms", True)
    row("E2E p50 ms at c=1", mf["c1"]["e2e_ms"]["p50"], df["c1"]["e2e_ms"]["p50"], "", True)
    row("server CPU ms/request at c=64 (all procs)", mf["c64"]["server_cpu_ms_per_req"], df["c64"]["server_cpu_ms_per_req"],
        "goal: ours <= 1.0 ms", True)
    row("server CPU ms/request at c=1", mf["c1"]["server_cpu_ms_per_req"], df["c1"]["server_cpu_ms_per_req"], "", True)
    row("client CPU ms/request at c=64", mf["c64"]["client_cpu_ms_per_req"], df["c64"]["client_cpu_ms_per_req"], "(bench client)", True)
    lines.append("speedup 1 on both (p50 / p90 / p99 ms)")
    for c in ("c16", "c64"):
        for key, label in (("ttft_ms", "TTFT"), ("itl_ms", "ITL"), ("tpot_ms", "TPOT")):
            a, b = m["speedup1"][c][key], d["speedup1"][c][key]
            lines.append(f"  {label} {c:4s} dynamo-mono {a['p50']:8.2f} / {a['p90']:8.2f} / {a['p99']:8.2f}"
                         f"    dynamo {b['p50']:8.2f} / {b['p90']:8.2f} / {b['p99']:8.2f}")
        lines.append(f"  req/s {c:4s} dynamo-mono {m['speedup1'][c]['req_per_s']:8.2f}    dynamo {d['speedup1'][c]['req_per_s']:8.2f}")
    for name, x in (("dynamo-mono", m), ("dynamo", d)):
        mem = x["memory"]
        lines.append(f"memory {name:12s} at start {x['free']['idle_rss_at_start_mb']:7.1f} MB, idle after warm-up "
                     f"{mem['idle_mb']:7.1f} MB, {mem['inflight']} in flight {mem['busy_mb']:7.1f} MB "
                     f"=> {mem['per_request_kb']:7.1f} KB/request (goals for ours: <= 120 MB idle, <= 20 KB/request)")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dynamo-python", default=os.environ.get("DYNAMO_PYTHON", "/tmp/dynvenv/bin/python"))
    p.add_argument("--requests", type=int, default=2000, help="requests of the c=64 throughput run")
    p.add_argument("--warmup", type=int, default=128)
    p.add_argument("--inflight", type=int, default=256, help="streaming requests held open for the memory figure")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not taskset servers / client to separate CPUs")
    p.add_argument("--json", help="also write all figures to this JSON file")
    args = p.parse_args()
    if not Path(args.dynamo_python).exists():
        print(f"Dynamo python {args.dynamo_python} not found: install it as in docs/performance.md", file=sys.stderr)
        return 2
    args.pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if args.pin:
        os.sched_setaffinity(0, {CLIENT_CPU})
    from dynamo_mono.uvloop_setup import run

    out = run(main_async(args))
    print(report(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
