"""The mocker seen through the HTTP API: prefix-cache hits, prefill cost growing with prompt length, queueing."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

pytestmark = pytest.mark.timeout(90)


def test_shared_prefix_reports_cached_whole_blocks(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--block-size", "16")
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    prefix = list(range(100, 100 + 16 * 10))  # 10 whole blocks of token ids
    first = client.completions.create(model="tiny-chatml", prompt=prefix + [7, 8, 9], max_tokens=2)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second = client.completions.create(model="tiny-chatml", prompt=prefix + [11, 12, 13, 14, 15], max_tokens=2)
    assert second.usage.prompt_tokens_details.cached_tokens == 16 * 10
    partial = client.completions.create(model="tiny-chatml", prompt=prefix[:40] + [1, 2, 3], max_tokens=2)
    assert partial.usage.prompt_tokens_details.cached_tokens == 32  # 2 whole blocks of the 40 shared tokens


async def _ttft(session: aiohttp.ClientSession, url: str, prompt: list[int], max_tokens: int = 2) -> float:
    t0 = time.perf_counter()
    body = {"model": "tiny-chatml", "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    async with session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data: {"):
                ttft = time.perf_counter() - t0
                break
        await r.read()
    return ttft


async def test_ttft_grows_with_prompt_length(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--no-enable-prefix-caching")
    async with aiohttp.ClientSession() as s:
        short = min([await _ttft(s, srv.url, list(range(10, 74)))for _ in range(3)])
        long = min([await _ttft(s, srv.url, [10 + i % 2000 for i in range(6000)]) for _ in range(3)])
    assert long > short * 2, (short, long)


async def test_queueing_beyond_max_num_seqs(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-num-seqs", "2")
    async with aiohttp.ClientSession() as s:
        async def run() -> float:
            t0 = time.perf_counter()
            body = {"model": "tiny-chatml", "prompt": "hi", "max_tokens": 30, "ignore_eos": True}
            async with s.post(srv.url + "/v1/completions", json=body) as r:
                assert r.status == 200
                await r.read()
            return time.perf_counter() - t0

        times = sorted(await asyncio.gather(*(run() for _ in range(6))))
        async with s.get(srv.url + "/metrics") as r:
            assert "dynamo_engine_waiting_requests" in await r.text()
    # with 2 slots, 6 requests run in 3 waves: the last finish about 3x later than the first
    assert times[-1] > times[0] * 2.2, times
