"""Profile vLLM (tiny random Llama on CPU) with `dynamo-mono profile`, then run the same load on that vLLM and on
the mocker replaying the profile: TTFT / ITL side by side.

Both engines are driven in-process through the Engine protocol (no HTTP: its overhead is the same for both and
would only blur the engine timings). The mocker copies the instance's shape from DIR/profile.json (block size, KV
blocks, max-num-seqs, token budget) and takes its timing from the profile (--planner-profile-data DIR).

A second profile taken after the loads shows how far the (shared) machine drifted during the run: the mocker
replays the first one.

    python3 tests/benchmarks/bench_profile_replay.py [--profile-dir DIR] [--reuse-profile] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.vllm.conftest import VLLM_ENV  # noqa: E402

os.environ.update(VLLM_ENV)

VLLM_FLAGS = ["--engine", "vllm", "--dtype", "float32", "--enforce-eager", "--block-size", "32",
              "--max-model-len", "2048", "--num-gpu-blocks-override", "512"]


@dataclass(frozen=True)
class Load:
    name: str
    concurrency: int
    requests: int
    isl: tuple[int, int]  # uniform range
    osl: int


LOADS = [
    Load("c=1  isl 256-1024 osl 64", 1, 12, (256, 1024), 64),
    Load("c=4  isl 128-512  osl 64", 4, 16, (128, 512), 64),
    Load("c=8  isl 128-768  osl 96", 8, 24, (128, 768), 96),
    Load("c=16 isl 64-256   osl 64", 16, 48, (64, 256), 64),
]


async def drive(engine, vocab: int, load: Load, seed: int) -> tuple[list[float], list[float]]:
    """Closed loop: `concurrency` clients, `requests` in all; per request TTFT and mean ITL (ms)."""
    import numpy as np

    from dynamo_mono.profiler.measure import run_request

    rng = np.random.default_rng(seed)
    work = [(rng.integers(0, vocab, size=int(rng.integers(load.isl[0], load.isl[1] + 1))).tolist())
            for _ in range(load.requests)]
    ttft, itl = [], []

    async def client() -> None:
        while work:
            tl = await run_request(engine, work.pop(), load.osl)
            ttft.append(tl.ttft_s * 1000)
            n = sum(k for _, k in tl.outputs) - tl.outputs[0][1]
            if n > 0:
                itl.append((tl.last - tl.first) * 1000 / n)

    await asyncio.gather(*(client() for _ in range(load.concurrency)))
    return ttft, itl


async def measure(engines: dict[str, tuple[str, dict]], rounds: int) -> dict[str, dict[str, tuple[float, ...]]]:
    """Start every engine, then run each load on each engine in turn, `rounds` times, alternating which goes first
    (a shared machine's load drifts: interleaving spreads it over both). engine -> load -> (median TTFT, median
    ITL, mean TTFT, mean ITL) in ms."""
    from dynamo_mono.plugins import get_plugins
    from dynamo_mono.profiler.command import profile_settings, start_instance
    from dynamo_mono.profiler.measure import run_request

    plugins = get_plugins()
    started = {}
    try:
        for label, (engine_name, cli) in engines.items():
            settings = profile_settings(plugins, engine_name, {"engine": engine_name, **cli})
            started[label] = await start_instance(settings, plugins)
            for _ in range(2):  # warm-up, as the profiler does
                await run_request(started[label][0], list(range(1, 512)), 8)
        samples = {label: {load.name: ([], []) for load in LOADS} for label in engines}
        order = list(engines)
        for r in range(rounds):
            for load in LOADS:
                for label in (order if r % 2 == 0 else order[::-1]):
                    engine, info = started[label]
                    ttft, itl = await drive(engine, info.tokenizer.vocab_size, load, seed=1000 + r)
                    samples[label][load.name][0].extend(ttft)
                    samples[label][load.name][1].extend(itl)
    finally:
        for engine, _ in started.values():
            await engine.stop()
    return {label: {name: (statistics.median(t), statistics.median(i), statistics.mean(t), statistics.mean(i))
                    for name, (t, i) in per_load.items()} for label, per_load in samples.items()}


def _vllm_cli(model: Path) -> dict:
    return {"model": str(model), "dtype": "float32", "enforce_eager": True, "block_size": 32,
            "max_model_len": 2048, "num_gpu_blocks_override": 512}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile-dir", default=str(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-profile"))
    ap.add_argument("--reuse-profile", action="store_true", help="use the profile already in --profile-dir")
    ap.add_argument("--rounds", type=int, default=4, help="repeats of each load per engine (interleaved)")
    ap.add_argument("--no-drift-check", dest="drift_check", action="store_false",
                    help="skip profiling vLLM again at the end (how much the machine drifted during the run)")
    args = ap.parse_args()

    from dynamo_mono.profiler.data import read_profile
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    model = build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-v1", seed=0)
    prof = Path(args.profile_dir)
    if not args.reuse_profile or not (prof / "profile.json").exists():
        _take_profile(model, prof)
    facts = json.loads((prof / "profile.json").read_text())
    vllm_cli = _vllm_cli(model)
    mocker_cli = {"model": str(model), "max_model_len": 2048, "planner_profile_data": str(prof),
                  "block_size": facts["block_size"], "num_gpu_blocks_override": facts["total_kv_blocks"],
                  "max_num_seqs": facts["max_num_seqs"], "max_num_batched_tokens": facts["max_num_batched_tokens"],
                  "speedup_ratio": 1.0}
    res = asyncio.run(measure({"vllm": ("vllm", vllm_cli), "mocker": ("mocker", mocker_cli)}, args.rounds))
    real, mock = res["vllm"], res["mocker"]
    print(f"\nprofile: {prof}  (mocker: block {facts['block_size']}, {facts['total_kv_blocks']} blocks, "
          f"max-num-seqs {facts['max_num_seqs']}, max-num-batched-tokens {facts['max_num_batched_tokens']})")
    for i, stat in ((0, "median"), (2, "mean")):
        print(f"\n{stat} over requests (ratio = mocker / vLLM)")
        print(f"{'load':28s} {'TTFT vLLM':>10s} {'TTFT mock':>10s} {'ratio':>6s}   {'ITL vLLM':>9s} {'ITL mock':>9s} "
              f"{'ratio':>6s}")
        for load in LOADS:
            tv, iv = real[load.name][i:i + 2]
            tm, im = mock[load.name][i:i + 2]
            print(f"{load.name:28s} {tv:8.2f}ms {tm:8.2f}ms {tm / tv:6.2f}   {iv:7.2f}ms {im:7.2f}ms "
                  f"{im / iv:6.2f}")
    if args.drift_check:
        after = prof.with_name(prof.name + "-after")
        _take_profile(model, after)
        p0, p1 = read_profile(prof), read_profile(after)
        print(f"\nvLLM's drift over the run (profile after / before, median over points): prefill TTFT "
              f"{statistics.median(p1.prefill.ttft_ms / p0.prefill.ttft_ms):.2f}, decode ITL "
              f"{statistics.median(p1.decode.itl_ms / p0.decode.itl_ms):.2f}; batched-prefill overhead "
              f"{p0.prefill.seq_overhead_ms:.2f} -> {p1.prefill.seq_overhead_ms:.2f} ms")
    return 0


def _take_profile(model: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "dynamo_mono.cli", "profile", *VLLM_FLAGS, "--model", str(model),
           "--output-dir", str(out), "--log-level", "warning", "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, env={**os.environ, **VLLM_ENV})
    print(f"profile taken in {time.monotonic() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
