"""Image generation through the server vs the same diffusers pipeline called directly, and chat TTFT while
images are generated on the same server. A benchmark script, not part of the test suite:

    python tests/benchmarks/bench_media.py [--images 24] [--size 128] [--steps 8] [--chats 200]

1. images/s: a tiny random StableDiffusion pipeline (plugins/diffusers tiny_pipelines, saved and loaded back with
   from_pretrained) called in this process (pipeline + PNG encoding, what a caller does to get the same bytes), vs
   `dynamo-mono serve --engine diffusers` with the same steps and size, sequential requests (c=1) and two at a
   time (c=2: the next request waits at the instance while one runs, as a loaded server would). Runs alternate.
2. chat TTFT p50: a streaming chat load on the mocker chat model of a server that also serves the diffusers
   image model, with and without a client keeping the image model busy; (a) the generator on a thread of the
   server process, (b) the generator in a `dynamo-mono worker` process. On a CPU-only machine the pipeline's
   work competes for the same cores as the server (a GPU host runs it on the device), so (b) pins the server
   and the worker to separate cores (taskset) with one torch thread: what is left to see is whether the
   server's event loop stalls while images are made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from conformance.server import start_server  # noqa: E402

PROMPT = "a watercolour painting of a lighthouse on a cliff at dusk"


def direct_images_per_s(model_dir: Path, n: int, size: int, steps: int) -> float:
    import torch
    from diffusers import DiffusionPipeline

    from dynamo_mono.media.encode import encode_image

    pipe = DiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def one(seed: int) -> bytes:
        g = torch.Generator().manual_seed(seed)
        out = pipe(PROMPT, num_inference_steps=steps, height=size, width=size, generator=g, output_type="np")
        return encode_image(out.images[0], "png").data

    one(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        one(i + 1)
    return n / (time.perf_counter() - t0)


async def server_images_per_s(url: str, model: str, n: int, size: int, steps: int, concurrency: int) -> float:
    body = {"model": model, "prompt": PROMPT, "size": f"{size}x{size}", "response_format": "b64_json",
            "nvext": {"num_inference_steps": steps}}
    async with aiohttp.ClientSession() as s:
        async def one(seed: int) -> None:
            async with s.post(url + "/v1/images/generations", json={**body, "nvext": {**body["nvext"], "seed": seed}}) as r:
                assert r.status == 200, await r.text()
                await r.read()

        await one(0)  # warm-up
        todo = list(range(1, n + 1))
        t0 = time.perf_counter()

        async def worker() -> None:
            while todo:
                await one(todo.pop())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


async def chat_ttfts(url: str, n: int, stop: asyncio.Event | None = None) -> list[float]:
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "tell me a story " * 20}],
            "max_tokens": 16, "stream": True}
    out: list[float] = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data: {"):
                        out.append(time.perf_counter() - t0)
                        break
                await r.read()
    return out


async def image_load(url: str, model: str, size: int, steps: int, stop: asyncio.Event) -> int:
    body = {"model": model, "prompt": PROMPT, "size": f"{size}x{size}", "response_format": "b64_json",
            "nvext": {"num_inference_steps": steps}}
    done = 0
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            async with s.post(url + "/v1/images/generations", json=body) as r:
                await r.read()
                done += 1
    return done


async def ttft_with_and_without(url: str, chats: int, size: int, steps: int) -> tuple[float, float, int]:
    await chat_ttfts(url, 10)  # warm-up
    quiet = await chat_ttfts(url, chats)
    stop = asyncio.Event()
    load = asyncio.ensure_future(image_load(url, "painter", size, steps, stop))
    await asyncio.sleep(0.5)  # benchmark only: let the first image start before measuring
    busy = await chat_ttfts(url, chats)
    stop.set()
    images = await load
    return statistics.median(quiet), statistics.median(busy), images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--chats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--part", choices=("all", "throughput", "ttft"), default="all")
    args = ap.parse_args()
    from dynamo_mono_diffusers.tiny_pipelines import make_stable_diffusion

    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        model_dir = make_stable_diffusion(Path(tmp) / "tiny-sd")
        direct, c1, c2 = [], [], []
        for _ in range(args.rounds if args.part != "ttft" else 0):
            direct.append(direct_images_per_s(model_dir, args.images, args.size, args.steps))
            srv = start_server(["--engine", "diffusers", "--model-kind", "image", "--model", str(model_dir),
                                "--served-model-name", "painter", "--max-num-inference-steps", "50",
                                "--log-level", "warning"], timeout=300)
            try:
                c1.append(asyncio.run(server_images_per_s(srv.url, "painter", args.images, args.size, args.steps, 1)))
                c2.append(asyncio.run(server_images_per_s(srv.url, "painter", args.images, args.size, args.steps, 2)))
            finally:
                srv.stop()
        if args.part == "ttft":
            return ttft_part(model_dir, Path(tmp), args)
        d, s1, s2 = statistics.median(direct), statistics.median(c1), statistics.median(c2)
        print(f"images/s ({args.size}x{args.size}, {args.steps} steps, best of {args.rounds} alternated rounds, median)")
        print(f"  direct pipeline + PNG : {d:7.2f}")
        print(f"  server c=1            : {s1:7.2f}  ({(s1 / d - 1) * 100:+.1f} %)")
        print(f"  server c=2            : {s2:7.2f}  ({(s2 / d - 1) * 100:+.1f} %)")

        ttft_part(model_dir, Path(tmp), args)
    return 0


def ttft_part(model_dir: Path, tmp: Path, args: argparse.Namespace) -> int:
    """Chat TTFT p50 with and without image load: (a) generator on a server thread, (b) in a worker process."""
    cfg = tmp / "models.yaml"
    cfg.write_text(f"- {{name: tiny-chatml, engine: mocker, options: {{speedup_ratio: 1}}}}\n"
                   f"- {{name: painter, engine: diffusers, kind: image, model: {model_dir}}}\n")
    srv = start_server(["--config", str(cfg), "--log-level", "warning"], timeout=300)
    try:
        quiet, busy, images = asyncio.run(ttft_with_and_without(srv.url, args.chats, args.size, args.steps))
    finally:
        srv.stop()
    print(f"chat TTFT p50 ({args.chats} streaming requests, mocker chat model beside the diffusers model)")
    print(f"  (a) generator on a server thread, no image load : {quiet * 1000:7.2f} ms")
    print(f"  (a) generator on a server thread, images        : {busy * 1000:7.2f} ms  "
          f"({(busy / quiet - 1) * 100:+.1f} %, {images} images meanwhile)")
    quiet, busy, images = worker_ttft(model_dir, tmp, args)
    print(f"  (b) generator in a worker process, no image load: {quiet * 1000:7.2f} ms")
    print(f"  (b) generator in a worker process, images       : {busy * 1000:7.2f} ms  "
          f"({(busy / quiet - 1) * 100:+.1f} %, {images} images meanwhile)")
    return 0


def worker_ttft(model_dir: Path, tmp: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """Chat TTFT with the image model served by a worker process (server and worker on separate cores)."""
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    cfg = tmp / "models-worker.yaml"
    cfg.write_text("- {name: tiny-chatml, engine: mocker, options: {speedup_ratio: 1}}\n"
                   "- {name: painter, kind: image, engine: diffusers, instances: 0}\n")
    from tests.worker.harness import start_server as start_unready_server  # returns before /ready (no worker yet)

    token = "bench-media-token"
    srv = start_unready_server(["--config", str(cfg), "--log-level", "warning"], token=token, timeout=300)
    worker = None
    try:
        if pin:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(srv.proc.pid)], check=True, capture_output=True)
        cmd = [sys.executable, "-m", "dynamo_mono.cli", "worker", "--engine", "diffusers", "--model-kind", "image",
               "--model", str(model_dir), "--served-model-name", "painter", "--connect", srv.url,
               "--worker-token", token, "--log-level", "warning"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        worker = subprocess.Popen((["taskset", "-c", "1"] if pin else []) + cmd, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            import json
            import urllib.error
            import urllib.request

            try:
                with urllib.request.urlopen(srv.url + "/health", timeout=5) as r:
                    health = json.loads(r.read())
            except urllib.error.HTTPError as exc:  # 503 until the worker's instance is ready
                health = json.loads(exc.read())
            if any(m["name"] == "painter" and m["ready_instances"] for m in health["models"]):
                break
            time.sleep(0.2)
        return asyncio.run(ttft_with_and_without(srv.url, args.chats, args.size, args.steps))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        srv.stop()


if __name__ == "__main__":
    sys.exit(main())
