"""LoRA placement on the mocker: TTFT p50/p99 and adapter swaps, HRW vs every adapter everywhere vs random.

4 mocker instances with --max-loras 4 GPU slots and a swap cost (--lora-load-ms), 32 adapters whose popularity
follows a Zipf law, a closed loop of concurrent streaming chat requests, KV-aware routing inside each adapter's
replica set. Placements:
  hrw        --lora-replica-factor 1: each adapter on its HRW instance
  hrw+scale  factor 1 and the load estimator growing hot adapters' replica sets
  everywhere --lora-replica-factor 0: every adapter on every instance
  random     each adapter on one instance drawn at random (seeded)
Usage: PYTHONPATH=. python tests/benchmarks/bench_lora.py [--requests 600] [--concurrency 24] [--lora-load-ms 40]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from dynamo_mono.http.state import STATE
from dynamo_mono.lora.placement import Key
from dynamo_mono.plugins import get_plugins
from tests.app_builder import build_test_app
from tests.lora.adapters import make_adapter

MODEL = "tiny-chatml"


def zipf_weights(n: int, s: float) -> list[float]:
    w = [1.0 / (i + 1) ** s for i in range(n)]
    t = sum(w)
    return [x / t for x in w]


async def run(placement: str, a: argparse.Namespace, adapter_dir: str) -> dict:
    opts = {"log_level": "warning", "num_instances": a.instances, "max_loras": a.max_loras,
            "lora_load_ms": a.lora_load_ms, "speedup_ratio": a.speedup, "router_mode": "kv",
            "lora_replica_factor": 0 if placement == "everywhere" else 1,
            "max_lora_rank": 64}
    if placement == "hrw+scale":
        opts.update(lora_scale_up_active=a.scale_up, lora_scale_down_active=a.scale_up / 4,
                    lora_sample_window=3, lora_max_replica_factor=a.instances)
    app = await build_test_app(get_plugins(), opts)
    state = app[STATE]
    if placement == "random":
        keys_of = state.loras.placement

        def random_placement(name: str, parent, factor: int) -> list[Key]:
            keys = sorted(keys_of(name, parent, 0))
            return [random.Random(f"{name}:7").choice(keys)] if keys else []
        state.loras.placement = random_placement
    client = TestClient(TestServer(app))
    await client.start_server()
    upkeep = None
    try:
        names = [f"adapter-{i:02d}" for i in range(a.adapters)]
        for n in names:
            r = await client.post("/v1/loras", json={"lora_name": n, "source": {"uri": f"{adapter_dir}/{n}"}})
            assert r.status == 200, await r.text()
        if placement == "hrw+scale":
            async def tick() -> None:
                while True:
                    await asyncio.sleep(a.sample_s)
                    await state.loras.reconcile()
            upkeep = asyncio.ensure_future(tick())
        weights = zipf_weights(a.adapters, a.zipf)
        rng = random.Random(1)
        plan = rng.choices(names, weights, k=a.requests)
        ttfts: list[float] = []
        it = iter(enumerate(plan))

        async def worker() -> None:
            for i, name in it:
                body = {"model": name, "messages": [{"role": "user", "content": f"question {i} " + "x " * 40}],
                        "max_tokens": a.max_tokens, "stream": True, "ignore_eos": True}
                t0 = time.perf_counter()
                first = None
                async with client.post("/v1/chat/completions", json=body) as r:
                    assert r.status == 200, await r.text()
                    async for line in r.content:
                        if first is None and line.startswith(b"data: ") and b'"content"' in line:
                            first = time.perf_counter() - t0
                ttfts.append(first if first is not None else time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        wall = time.perf_counter() - t0
        insts = state.models[MODEL].pool.instances.values()
        swaps = sum(i.engine.loras.swaps for i in insts)
        replicas = sum(len(ad.model.pool.keys) for ad in state.loras.adapters.values())
        ms = np.array(ttfts) * 1000
        return {"placement": placement, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                "swaps": swaps, "replicas": replicas, "rps": a.requests / wall}
    finally:
        if upkeep is not None:
            upkeep.cancel()
        await client.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--max-loras", type=int, default=4)
    p.add_argument("--adapters", type=int, default=32)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--concurrency", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--lora-load-ms", type=float, default=40.0)
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--scale-up", type=float, default=3.0)
    p.add_argument("--sample-s", type=float, default=0.2)
    p.add_argument("--only", default="hrw,hrw+scale,everywhere,random")
    a = p.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for i in range(a.adapters):
            make_adapter(d, f"adapter-{i:02d}")
        print(f"{a.instances} instances x {a.max_loras} LoRA slots, {a.adapters} adapters (Zipf s={a.zipf}), "
              f"{a.requests} requests at concurrency {a.concurrency}, swap {a.lora_load_ms} ms")
        print(f"{'placement':<12} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'swaps':>6} {'replicas':>9} {'req/s':>7}")
        for placement in a.only.split(","):
            r = await run(placement, a, d)
            print(f"{r['placement']:<12} {r['p50']:>12.1f} {r['p99']:>12.1f} {r['swaps']:>6} {r['replicas']:>9} "
                  f"{r['rps']:>7.1f}")


if __name__ == "__main__":
    asyncio.run(main())
