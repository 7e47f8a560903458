"""Routing evaluation: prefix hit rate, TTFT and req/s of kv vs round-robin vs random vs the oracle, over seeds.

Starts a fresh `dynamo-mono serve --num-instances N` (mocker) per mode and seed and drives it with the
prefix-group workload of conformance/routing_workload.py (G groups x U users share a group prefix; with
--zipf S the group of each request is Zipf(S)-distributed). The oracle pins group g to instance g mod N.
Prints one row per mode: mean and spread (min-max) over seeds, and kv / oracle per seed.

Mode `dynamo` (added by --dynamo) runs the same workload against NVIDIA Dynamo 1.6.1 when installed
(--dynamo-python, default /tmp/dynvenv/bin/python): its frontend with `--router-mode kv` and one mocker
process with `--num-workers N`, same block size, speedup and max model length; mode `dynamo-oracle` pins
groups on that same Dynamo stack like the oracle does (it separates Dynamo's router from its frontend and
mocker). Hit rate is read the same
way from both servers: the delta of dynamo_frontend_cached_tokens_sum / dynamo_frontend_input_sequence_tokens_sum
on /metrics (both frontends export these histograms, fed by the engines' cached-token counts). With
--shared-profile both mockers (every mode) load one --planner-profile-data NPZ (bench_vs_dynamo's), so TTFT
compares routers and frontends, not two timing models.

Run: python tests/benchmarks/bench_routing.py [--modes kv,round-robin,random,oracle] [--seeds 0,1,2,3,4]
     [--groups 16] [--users 8] [--prefix 1024] [--suffix 128] [--osl 32] [--concurrency 16] [--speedup 1]
     [--zipf 0] [--server-args "..."] [--kv-args "..."] [--dynamo] [--shared-profile] [--dynamo-args "..."]
Over-capacity example: --zipf 1.0 --groups 32 --server-args "--num-gpu-blocks-override 136"
(each instance caches about 4 prefixes of 16 blocks + the working set; 32 groups need 8 per instance).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance import routing_workload  # noqa: E402
from conformance.routing_workload import RunResult, Workload, run  # noqa: E402
from conformance.server import start_server  # noqa: E402
from dynamo_mono.assets import TINY_CHATML_DIR  # noqa: E402
from tests.benchmarks.bench_vs_dynamo import MODEL, Servers, _free_port, _wait_models, write_shared_profile  # noqa: E402


def _dynamo_instances(kv_dir: Path) -> list[int]:
    """Instance ids of the registered `generate` endpoints in Dynamo's file discovery directory."""
    root = kv_dir / "v1" / "instances"
    if not root.exists():
        return []
    return sorted(json.loads(f.read_text())["instance_id"] for f in root.rglob("*")
                  if f.is_file() and "generate" in str(f.relative_to(root)))


def start_dynamo_kv(a: argparse.Namespace) -> Servers:
    """Dynamo 1.6.1 frontend (kv router) + one mocker process with a.instances workers; returns when all
    workers are registered."""
    s = Servers("dynamo", pin=False)
    port = _free_port()
    kv_dir = s.tmp / "kv"
    env = dict(os.environ, DYN_FILE_KV=str(kv_dir), DYN_LOG="warn")
    common = ["--discovery-backend", "file", "--request-plane", "tcp", "--event-plane", "zmq"]
    s._spawn([a.dynamo_python, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
              "--router-mode", "kv", "--kv-cache-block-size", str(a.block_size), *common], "frontend.log", env)
    s._spawn([a.dynamo_python, "-m", "dynamo.mocker", "--model-path", str(TINY_CHATML_DIR), "--model-name", MODEL,
              "--num-workers", str(a.instances), "--speedup-ratio", str(a.speedup),
              "--block-size", str(a.block_size), "--max-model-len", str(max_model_len(a)), *common,
              *(["--planner-profile-data", str(a.profile)] if a.profile else []), *shlex.split(a.dynamo_args)],
             "mocker.log", env)
    s.url = f"http://127.0.0.1:{port}"
    try:
        _wait_models(s.url)
        deadline = time.monotonic() + 60
        while len(ids := _dynamo_instances(kv_dir)) < a.instances:
            if time.monotonic() > deadline or any(p.poll() is not None for p in s.procs):
                raise RuntimeError(f"{len(ids)} of {a.instances} Dynamo workers registered")
            time.sleep(0.1)
        s.worker_ids = ids  # type: ignore[attr-defined]
    except RuntimeError as exc:
        logs = "".join((s.tmp / f).read_text(errors="replace")[-1500:] for f in ("frontend.log", "mocker.log"))
        s.stop()
        raise RuntimeError(f"Dynamo did not start ({exc}):\n{logs}") from None
    return s


def max_model_len(a: argparse.Namespace) -> int:
    return a.prefix + a.suffix + a.osl + 64


def evaluate(mode: str, seed: int, a: argparse.Namespace) -> RunResult:
    w = Workload(groups=a.groups, users=a.users, prefix_len=a.prefix, suffix_len=a.suffix, osl=a.osl,
                 seed=seed, zipf=a.zipf)
    if mode in ("dynamo", "dynamo-oracle"):
        dyn = start_dynamo_kv(a)
        try:
            if mode == "dynamo":
                return asyncio.run(run(dyn.url, w, concurrency=a.concurrency))
            # Same pinning as the oracle (nvext.backend_instance_id, which Dynamo honours), with Dynamo's
            # worker ids taken from its discovery directory instead of our router's /metrics gauges.
            with mock.patch.object(routing_workload, "worker_ids", lambda _metrics: dyn.worker_ids):
                return asyncio.run(run(dyn.url, w, concurrency=a.concurrency, oracle=True))
        finally:
            dyn.stop()
    router = "kv" if mode in ("kv", "oracle") else mode
    extra = shlex.split(a.kv_args) if mode == "kv" else []
    srv = start_server(["--engine", "mocker", "--num-instances", str(a.instances), "--router-mode", router,
                        "--speedup-ratio", str(a.speedup), "--block-size", str(a.block_size),
                        "--max-model-len", str(max_model_len(a)),
                        *(["--planner-profile-data", str(a.profile)] if a.profile else []),
                        *shlex.split(a.server_args), *extra])
    try:
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
    ap.add_argument("--dynamo", action="store_true", help="add mode `dynamo`: NVIDIA Dynamo's kv router + mockers")
    ap.add_argument("--dynamo-python", default=os.environ.get("DYNAMO_PYTHON", "/tmp/dynvenv/bin/python"))
    ap.add_argument("--dynamo-args", default="", help="extra `dynamo.mocker` arguments for the dynamo modes")
    ap.add_argument("--shared-profile", action="store_true",
                    help="every mode's mocker loads one --planner-profile-data NPZ (bench_vs_dynamo's)")
    a = ap.parse_args()
    modes = a.modes.split(",")
    if a.dynamo and "dynamo" not in modes:
        modes.append("dynamo")
    unknown = set(modes) - {"kv", "round-robin", "random", "oracle", "dynamo", "dynamo-oracle"}
    if unknown:
        ap.error(f"unknown modes: {', '.join(sorted(unknown))}")
    if {"dynamo", "dynamo-oracle"} & set(modes) and not Path(a.dynamo_python).exists():
        ap.error(f"Dynamo python {a.dynamo_python} not found: install it as in docs/performance.md")
    profile_dir = Path(tempfile.mkdtemp(prefix="bench-routing-profile-"))
    try:
        a.profile = write_shared_profile(profile_dir / "perf_data.npz") if a.shared_profile else None
        report(modes, a)
    finally:
        shutil.rmtree(profile_dir, ignore_errors=True)


def report(modes: list[str], a: argparse.Namespace) -> None:
    seeds = [int(s) for s in a.seeds.split(",")]
    res: dict[str, list[RunResult]] = {m: [] for m in modes}
    for seed in seeds:  # modes alternate within a seed, so machine-load drift hits them alike
        for m in modes:
            r = evaluate(m, seed, a)
            res[m].append(r)
            print(f"seed {seed} {m:<13} hit {r.hit_rate:.3f} p50 {r.ttft_p50_ms:.1f} ms p99 {r.ttft_p99_ms:.1f} ms "
                  f"{r.req_s:.2f} req/s lost {'-' if m.startswith('dynamo') else f'{r.lost_decisions:.0f}'}", flush=True)
    print(f"\n{a.instances} mocker instances, speedup {a.speedup}, {a.groups} groups x {a.users} users"
          f"{f' (zipf {a.zipf})' if a.zipf else ''}, prefix {a.prefix} + suffix {a.suffix} tokens, OSL {a.osl}, "
          f"concurrency {a.concurrency}, seeds {seeds}"
          f"{', one shared planner profile' if a.profile else ''}; mean (min-max)")
    print(f"{'mode':<13} {'hit rate':>20} {'TTFT p50 ms':>20} {'TTFT p99 ms':>22} {'req/s':>20}")
    for m in modes:
        rs = res[m]
        print(f"{m:<13} {spread([r.hit_rate for r in rs], '.3f'):>20} {spread([r.ttft_p50_ms for r in rs], '.1f'):>20} "
              f"{spread([r.ttft_p99_ms for r in rs], '.1f'):>22} {spread([r.req_s for r in rs], '.2f'):>20}")
    if "kv" in res and "oracle" in res:
        ratios = [k.hit_rate / o.hit_rate for k, o in zip(res["kv"], res["oracle"]) if o.hit_rate]
        print(f"kv / oracle hit rate per seed: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"mean {statistics.mean(ratios):.2f}, min {min(ratios):.2f}")
    if "dynamo" in res and "oracle" in res:
        ratios = [d.hit_rate / o.hit_rate for d, o in zip(res["dynamo"], res["oracle"]) if o.hit_rate]
        print(f"dynamo / oracle hit rate per seed: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"mean {statistics.mean(ratios):.2f}, min {min(ratios):.2f}")


if __name__ == "__main__":
    main()
