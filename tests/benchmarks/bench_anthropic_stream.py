"""Streaming throughput of /v1/messages vs /v1/chat/completions on the same mocker (speedup 0): the ratio
shows the Anthropic layer's per-token cost. Run: python3 tests/benchmarks/bench_anthropic_stream.py"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import aiohttp
from aiohttp import web

from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.http.app import create_app
from dynamo_mono.plugins import get_plugins
from dynamo_mono.server import build_state, stop_engines

REQUESTS = 64
CONCURRENCY = 16
MAX_TOKENS = 256
MSG = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


async def one(session: aiohttp.ClientSession, url: str, payload: dict) -> int:
    async with session.post(url, json=payload) as r:
        assert r.status == 200, await r.text()
        n = 0
        async for _ in r.content.iter_any():
            n += 1
        return n


async def run(session: aiohttp.ClientSession, url: str, payload: dict) -> float:
    sem = asyncio.Semaphore(CONCURRENCY)

    async def task() -> None:
        async with sem:
            await one(session, url, payload)

    t0 = time.perf_counter()
    await asyncio.gather(*(task() for _ in range(REQUESTS)))
    return time.perf_counter() - t0


async def main() -> None:
    plugins = get_plugins()
    # a long scripted answer: every request of both APIs streams exactly MAX_TOKENS tokens
    fd, script = tempfile.mkstemp(suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(" ".join(f"word{i}" for i in range(4 * MAX_TOKENS)))
    settings = resolve(serve_options(plugins), {"speedup_ratio": 0.0, "log_level": "warning",
                                                "mocker_output": f"script:{script}"}, env={})
    state = await build_state(settings, plugins)
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    model = next(iter(state.models))
    openai_payload = {"model": model, "messages": MSG, "max_tokens": MAX_TOKENS, "stream": True}
    anth_payload = {"model": model, "messages": MSG, "max_tokens": MAX_TOKENS, "stream": True}
    try:
        async with aiohttp.ClientSession() as s:
            await run(s, base + "/v1/messages", anth_payload)  # warm-up
            res = {}
            for name, url, payload in (("openai", "/v1/chat/completions", openai_payload),
                                       ("anthropic", "/v1/messages", anth_payload),
                                       ("openai", "/v1/chat/completions", openai_payload),
                                       ("anthropic", "/v1/messages", anth_payload)):
                res.setdefault(name, []).append(await run(s, base + url, payload))
            u = await (await s.post(base + "/v1/messages", json={**anth_payload, "stream": False})).json()
        best = {k: min(v) for k, v in res.items()}
        for k, v in best.items():
            print(f"{k:10s} {REQUESTS} streams x {MAX_TOKENS} tokens, concurrency {CONCURRENCY}: {v:.3f} s")
        assert u["usage"]["output_tokens"] == MAX_TOKENS
        print(f"anthropic / openai wall-time ratio: {best['anthropic'] / best['openai']:.3f}")
    finally:
        os.unlink(script)
        await runner.cleanup()
        await stop_engines(state)


if __name__ == "__main__":
    asyncio.run(main())
