"""SLA planner vs fixed instance counts on the mocker (speedup 1, a profile): one seeded load trace that steps light ->
heavy -> light, replayed against `serve --planner`, a fixed minimum and a fixed maximum of instances. Prints SLA
attainment (share of requests meeting both the TTFT and the ITL target), instance-seconds, latency percentiles and
lost requests per run, and plots load, instances and TTFT p90 over time.

    python tests/benchmarks/bench_planner.py --plot docs/planner.png
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dynamo_mono.bench.client import RequestRecord, send  # noqa: E402
from dynamo_mono.bench.workload import WordPool  # noqa: E402
from mocker.perf_model import PerfModel  # noqa: E402
from tests.planner.profile_helper import write_profile  # noqa: E402

MODEL = "tiny-chatml"
# A slow engine (prefill 0.1 ms per token in chunks of CHUNK tokens, decode steps >= 2 ms) and long prompts, so that
# a few requests per second need several instances while the HTTP server on a 2-core machine stays far from busy.
PERF = PerfModel(prefill_base_ms=5.0, prefill_ms_per_token=0.1, prefill_ms_per_token_pair=0.0, decode_base_ms=2.0,
                 decode_ms_per_seq=0.05, decode_ms_per_kv_token=2e-5)
CHUNK = 512  # --max-num-batched-tokens: a step holds at most this much prefill, so ITL stays near the profile's


@dataclass
class Run:
    name: str
    records: list[RequestRecord] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # send offsets (s)
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, instances running)
    drains: int = 0
    in_flight_at_drain: int = 0  # requests on instances when they began to drain (all must still complete)
    t0: float = 0.0
    log: str = ""


def schedule(phases: list[tuple[float, float]], seed: int) -> list[float]:
    """Poisson arrival offsets (s) for phases of (seconds, requests/s)."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    t0 = 0.0
    for dur, rate in phases:
        t = t0
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= t0 + dur:
                break
            out.append(t)
        t0 += dur
    return out


def start_server(args: argparse.Namespace, profile: Path, instances: int, planner: bool, workdir: Path,
                 name: str) -> tuple[subprocess.Popen, str, Path]:
    ready = workdir / f"{name}.ready"
    log = workdir / f"{name}.log"
    cmd = [sys.executable, "-m", "dynamo_mono.cli", "serve", "--port", "0", "--ready-file", str(ready),
           "--num-instances", str(instances), "--speedup-ratio", "1", "--planner-profile-data",
           str(profile / "mocker_profile.npz"), "--max-num-batched-tokens", str(CHUNK), "--max-queue-length", "100000", "--max-queue-wait", "600"]
    if planner:
        cmd += ["--planner", "--profile-results-dir", str(profile), "--ttft", str(args.ttft), "--itl", str(args.itl),
                "--adjustment-interval", str(args.interval), "--min-instances", str(args.min),
                "--max-instances", str(args.max), "--load-predictor", args.predictor]
        if args.load_scaling:
            cmd += ["--enable-load-scaling", "--load-adjustment-interval", str(args.load_interval)]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server {name} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc, "http://" + ready.read_text().strip(), log


async def sample_instances(session: aiohttp.ClientSession, url: str, run: Run, t0: float, fixed: int | None,
                           stop: asyncio.Event) -> None:
    pat = re.compile(r'^dynamo_planner_instances\{[^}]*\} ([0-9.e+]+)$', re.M)
    while not stop.is_set():
        t = time.perf_counter() - t0
        if fixed is not None:
            run.samples.append((t, float(fixed)))
        else:
            async with session.get(url + "/metrics") as r:
                text = await r.text()
            run.samples.append((t, sum(float(v) for v in pat.findall(text))))
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


async def drive(url: str, offsets: list[float], bodies: list[bytes], run: Run, args: argparse.Namespace,
                fixed: int | None) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        t0 = run.t0 = time.perf_counter()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_instances(session, url, run, t0, fixed, stop))
        endpoint = url + "/v1/completions"

        async def one(at: float, body: bytes) -> None:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            run.arrivals.append(time.perf_counter() - t0)
            run.records.append(await send(session, endpoint, body, {"Content-Type": "application/json"}, True,
                                          args.isl, args.osl))

        await asyncio.gather(*(one(at, b) for at, b in zip(offsets, bodies)))
        stop.set()
        await sampler
        run.samples.append((time.perf_counter() - t0, run.samples[-1][1] if run.samples else 0.0))


def instance_seconds(samples: list[tuple[float, float]]) -> float:
    return sum((t1 - t0) * n for (t0, n), (t1, _) in zip(samples, samples[1:]))


def meets(rec: RequestRecord, args: argparse.Namespace) -> bool:
    if not rec.ok or rec.ttft is None:
        return False
    itl = float(np.mean(rec.itl)) * 1000 if rec.itl else 0.0
    return rec.ttft * 1000 <= args.ttft and itl <= args.itl


def summarize(run: Run, args: argparse.Namespace) -> dict:
    recs = run.records
    ok = [r for r in recs if r.ok and r.output_tokens == args.osl]
    ttft = np.array([r.ttft * 1000 for r in ok]) if ok else np.array([0.0])
    itl = np.array([np.mean(r.itl) * 1000 for r in ok if r.itl]) if ok else np.array([0.0])
    return {"name": run.name, "sent": len(recs), "ok": len(ok), "lost": len(recs) - len(ok),
            "sla": sum(meets(r, args) for r in recs) / max(1, len(recs)),
            "inst_s": instance_seconds(run.samples), "ttft_p50": float(np.percentile(ttft, 50)),
            "ttft_p90": float(np.percentile(ttft, 90)), "itl_p90": float(np.percentile(itl, 90)),
            "max_inst": max((n for _, n in run.samples), default=0), "drains": run.drains,
            "in_flight": run.in_flight_at_drain}


def table(rows: list[dict], args: argparse.Namespace) -> str:
    head = (f"| run | SLA attainment (TTFT <= {args.ttft:g} ms and ITL <= {args.itl:g} ms) | instance-seconds | "
            "TTFT p50 / p90 (ms) | ITL p90 (ms) | most instances | requests ok / sent | lost |\n"
            "|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['name']} | {r['sla'] * 100:.1f} % | {r['inst_s']:.0f} | {r['ttft_p50']:.0f} / {r['ttft_p90']:.0f} | "
        f"{r['itl_p90']:.0f} | {r['max_inst']:.0f} | {r['ok']} / {r['sent']} | {r['lost']} |\n" for r in rows)


def plot(runs: list[Run], phases: list[tuple[float, float]], path: str, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = sum(d for d, _ in phases)
    win = args.window
    edges = np.arange(0, total + win, win)
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    arr = np.histogram(runs[0].arrivals, bins=edges)[0] / win
    ax[0].step(edges[:-1], arr, where="post", color="black")
    ax[0].set_ylabel("load (req/s)")
    ax[0].set_title(f"planner vs fixed instances, mocker speedup 1, ISL {args.isl} / OSL {args.osl}")
    for run in runs:
        t, n = zip(*run.samples)
        ax[1].step(t, n, where="post", label=run.name)
        base = run.t0
        p90 = []
        for lo in edges[:-1]:
            sel = [r.ttft * 1000 for r in run.records if r.ttft is not None and lo <= r.start - base < lo + win]
            p90.append(np.percentile(sel, 90) if sel else np.nan)
        ax[2].plot(edges[:-1] + win / 2, p90, marker=".", label=run.name)
    ax[1].set_ylabel("instances")
    ax[1].legend(loc="upper left")
    ax[2].axhline(args.ttft, color="grey", ls="--", lw=1, label="TTFT target")
    ax[2].set_yscale("log")
    ax[2].set_ylabel(f"TTFT p90 (ms, {win:g} s windows)")
    ax[2].set_xlabel("time (s), by request start")
    ax[2].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phases", default="20:0.4,50:4.5,30:0.4", help="SECONDS:REQ_PER_S,... (light, heavy, light)")
    ap.add_argument("--isl", type=int, default=4096)
    ap.add_argument("--osl", type=int, default=32)
    ap.add_argument("--ttft", type=float, default=3000.0, help="TTFT target, ms")
    ap.add_argument("--itl", type=float, default=100.0, help="ITL target, ms")
    ap.add_argument("--min", type=int, default=1)
    ap.add_argument("--max", type=int, default=4)
    ap.add_argument("--interval", type=float, default=5.0, help="planner --adjustment-interval")
    ap.add_argument("--predictor", default="constant")
    ap.add_argument("--no-load-scaling", dest="load_scaling", action="store_false", help="throughput-based scaling only")
    ap.add_argument("--load-interval", type=float, default=2.0)
    ap.add_argument("--window", type=float, default=5.0, help="plot window, s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", default="planner,fixed-min,fixed-max")
    ap.add_argument("--plot", default=None, help="write the PNG here")
    args = ap.parse_args()
    phases = [(float(a), float(b)) for a, b in (p.split(":") for p in args.phases.split(","))]
    offsets = schedule(phases, args.seed)
    pool = WordPool()
    rng = np.random.default_rng(args.seed + 1)
    bodies = [orjson.dumps({"model": MODEL, "prompt": pool.token_ids(list(rng.integers(0, len(pool.ids), args.isl))),
                            "max_tokens": args.osl, "ignore_eos": True, "stream": True,
                            "stream_options": {"include_usage": True}}) for _ in offsets]
    print(f"trace: {len(offsets)} requests, phases {phases}, ISL {args.isl}, OSL {args.osl}; targets TTFT "
          f"{args.ttft:g} ms, ITL {args.itl:g} ms; planner interval {args.interval:g}s, instances "
          f"[{args.min}, {args.max}]", flush=True)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profile = write_profile(work / "profile", PERF, chunk=CHUNK)
        for name in args.runs.split(","):
            planner = name == "planner"
            n = args.min if name in ("planner", "fixed-min") else args.max
            proc, url, log = start_server(args, profile, n, planner, work, name)
            run = Run(name if not planner else f"planner ({args.min}-{args.max})")
            if not planner:
                run.name = f"fixed {n}"
            try:
                asyncio.run(drive(url, offsets, bodies, run, args, None if planner else n))
            finally:
                proc.terminate()
                proc.wait(60)
            run.log = log.read_text()
            run.drains = run.log.count("drained and stopped")
            run.in_flight_at_drain = sum(int(m) for m in re.findall(r"with (\d+) request\(s\) in flight", run.log))
            if planner:
                for line in run.log.splitlines():
                    if "planner model" in line and ("decision" in line or "drained" in line or "started" in line):
                        print("   ", line[:260])
            runs.append(run)
            print(f"{run.name}: done", flush=True)
    rows = [summarize(r, args) for r in runs]
    print(table(rows, args))
    for r in rows:
        if r["drains"]:
            print(f"{r['name']}: {r['drains']} instance(s) drained and stopped while the trace ran, with "
                  f"{r['in_flight']} request(s) in flight on them when their drain began; {r['lost']} of {r['sent']} "
                  f"requests lost (not finished with all {args.osl} tokens)")
    if args.plot:
        plot(runs, phases, args.plot, args)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
