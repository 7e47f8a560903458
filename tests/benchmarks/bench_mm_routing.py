"""Image-aware KV routing on the mocker: 4 instances, requests that share 8 images across users (same text), KV hit
rate and TTFT p50 when the router's block hashes include the images vs when they ignore them.

Each request is one long shared system prompt, one of 8 images (same size: the same number of placeholder tokens)
and the same question. The engines' own prefix caches are always image-aware (as vLLM's is: the image's hash is in
its block keys). What changes between the runs is the router:
  image-aware   the frontend mixes each image's content hash into the blocks its placeholders cover and the mocker's
                KV events carry the same hashes (what the server does);
  image-blind   the frontend hashes the placeholder tokens only and the router indexes the engines' blocks by their
                tokens only (Dynamo before ai-dynamo/dynamo#6235): every image looks like every other.
The blind variant exists only in this script: it starts the server from this file (--serve) with the hashing patched,
so no server option can turn images off in the hashes.

Figures: the engines' real prefix hit rate (cached tokens / prompt tokens, from the usage of each response), the
router's predicted hit rate (mean of dynamo_component_router_kv_hit_rate: what it believed when it chose), TTFT
p50 / p90, and how many requests each instance served.

Run: python tests/benchmarks/bench_mm_routing.py [--users 16] [--concurrency 8] [--image-size 672] [--kv-blocks 256]
     [--speedup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import re
import statistics
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SYSTEM = ("You are a careful visual assistant. Look at the picture, name the main objects, their colours and "
          "positions, and answer in one short sentence. ") * 12
QUESTION = "What is in this picture?"


def serve_blind(argv: list[str]) -> int:
    """`dynamo-mono serve ARGV` with image-blind routing hashes (the server end of --blind)."""
    import dataclasses

    import dynamo_mono.serving.model as model_mod
    import mocker.sequence as seq_mod
    from dynamo_mono.block_hash import block_hashes
    from dynamo_mono.router.indexer import KvIndexer

    # 1. the frontend's routing hashes ignore the images
    model_mod.block_hashes = lambda ids, bs, parent=None, media=(): block_hashes(ids, bs, parent)  # type: ignore
    # 2. the engines stay image-aware: they hash the prompt themselves instead of taking the frontend's hashes
    init = seq_mod.Sequence.__init__

    def seq_init(self, request, *a, **kw):  # type: ignore[no-untyped-def]
        init(self, dataclasses.replace(request, block_hashes=None), *a, **kw)

    seq_mod.Sequence.__init__ = seq_init  # type: ignore[method-assign]
    # 3. the router indexes the engines' blocks by their tokens alone
    store = KvIndexer._store

    def blind_store(self, st, ev):  # type: ignore[no-untyped-def]
        st.rehash = True
        store(self, st, dataclasses.replace(ev, media_hashes=[]))

    KvIndexer._store = blind_store  # type: ignore[method-assign]
    from dynamo_mono.cli import main

    return main(["serve", *argv])


def png(size: int, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def start(blind: bool, a: argparse.Namespace):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import tempfile

    from conformance.server import ServerProcess

    args = ["--host", "127.0.0.1", "--port", "0", "--num-instances", str(a.instances), "--router-mode", "kv",
            "--speedup-ratio", str(a.speedup), "--block-size", str(a.block_size), "--mocker-input-modalities",
            "text,image", "--num-gpu-blocks-override", str(a.kv_blocks), "--log-level", "warning"]
    tmp = tempfile.mkdtemp(prefix="bench-mm-")
    ready, log_path = os.path.join(tmp, "ready"), os.path.join(tmp, "server.log")
    cmd = ([sys.executable, __file__, "--serve", "--"] if blind else [sys.executable, "-m", "dynamo_mono.cli", "serve"])
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*cmd, *args, "--ready-file", ready], stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    deadline = time.monotonic() + 120
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(open(log_path).read())
        time.sleep(0.05)
    host, port = open(ready).read().strip().rsplit(":", 1)
    srv = ServerProcess(proc, log_path, host, int(port), args)
    while True:
        try:
            with urllib.request.urlopen(srv.url + "/ready", timeout=2) as r:
                if r.status == 200:
                    return srv
        except Exception:
            time.sleep(0.05)


async def one(http, url: str, image: str) -> tuple[float, int, int]:  # type: ignore[no-untyped-def]
    body = {"model": "tiny-chatml", "max_tokens": 8, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                                      {"type": "text", "text": QUESTION}]}]}
    t0 = time.perf_counter()
    ttft = None
    usage = None
    async with http.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                usage = chunk["usage"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (ttft or 0.0) * 1000, usage["prompt_tokens"], cached


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


async def drive(url: str, a: argparse.Namespace) -> dict:
    import aiohttp

    images = [png(a.image_size, s) for s in range(a.images)]
    urls = ["data:image/png;base64," + base64.b64encode(b).decode() for b in images]
    order = [i for _ in range(a.users) for i in range(a.images)]
    random.Random(a.seed).shuffle(order)
    sem = asyncio.Semaphore(a.concurrency)
    async with aiohttp.ClientSession() as http:
        # warm-up (imports, first decode) with an image of its own
        await one(http, url, "data:image/png;base64," + base64.b64encode(png(56, 999)).decode())

        async def run(i: int) -> tuple[float, int, int]:
            async with sem:
                return await one(http, url, urls[i])

        t0 = time.perf_counter()
        rows = await asyncio.gather(*(run(i) for i in order))
        wall = time.perf_counter() - t0
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    ttfts = sorted(r[0] for r in rows)
    prompt, cached = sum(r[1] for r in rows), sum(r[2] for r in rows)
    predicted_sum = metric(text, "dynamo_component_router_kv_hit_rate_sum")
    predicted_n = metric(text, "dynamo_component_router_kv_hit_rate_count")
    per_instance = {m.group(1): int(float(m.group(2))) for m in re.finditer(
        r'dynamo_component_router_requests_total{[^}]*worker_id="(\d+)"[^}]*} (\S+)', text)}
    return {"hit_rate": cached / prompt, "predicted": predicted_sum / predicted_n if predicted_n else 0.0,
            "ttft_p50": statistics.median(ttfts), "ttft_p90": ttfts[int(0.9 * (len(ttfts) - 1))],
            "req_s": len(rows) / wall, "prompt_tokens": rows[0][1], "per_instance": per_instance}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.exit(serve_blind(sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--users", type=int, default=16, help="requests per image")
    ap.add_argument("--image-size", type=int, default=672, help="square images of this many pixels a side")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--kv-blocks", type=int, default=256,
                    help="KV blocks per instance (--num-gpu-blocks-override): 256 hold the shared prompt and about 5 "
                         "of the 8 images' blocks, so an instance cannot keep them all")
    ap.add_argument("--speedup", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rows = {}
    for name, blind in (("image-aware", False), ("image-blind", True)):
        srv = start(blind, a)
        try:
            rows[name] = asyncio.run(drive(srv.url, a))
        finally:
            srv.stop()
    first = next(iter(rows.values()))
    print(f"\n{a.instances} mocker instances (speedup {a.speedup}, {a.kv_blocks} KV blocks of {a.block_size}), "
          f"{a.images} images of "
          f"{a.image_size}x{a.image_size} x {a.users} users = {a.images * a.users} requests, concurrency "
          f"{a.concurrency}, {first['prompt_tokens']} prompt tokens each")
    print(f"{'routing hashes':<14} {'hit rate':>9} {'predicted':>10} {'TTFT p50 ms':>12} {'TTFT p90 ms':>12} "
          f"{'req/s':>7}  requests per instance")
    for name, r in rows.items():
        print(f"{name:<14} {r['hit_rate']:>9.1%} {r['predicted']:>10.1%} {r['ttft_p50']:>12.1f} "
              f"{r['ttft_p90']:>12.1f} {r['req_s']:>7.2f}  {sorted(r['per_instance'].values(), reverse=True)}")


if __name__ == "__main__":
    main()
