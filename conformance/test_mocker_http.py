"""The mocker seen through the HTTP API: prefix-cache hits, prefill cost growing with prompt length, queueing."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

from conformance.server import metric_value
from conformance.waits import metrics_text, wait_for_metric, wait_idle
from mocker.perf_model import PerfModel

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


async def _ttft(session: aiohttp.ClientSession, url: str, prompt: list[int]) -> float:
    t0 = time.perf_counter()
    body = {"model": "tiny-chatml", "prompt": prompt, "max_tokens": 2, "stream": True, "ignore_eos": True}
    async with session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            if line.startswith(b"data: {"):
                ttft = time.perf_counter() - t0
                break
        await r.read()
    return ttft


async def test_ttft_includes_the_simulated_prefill(make_server) -> None:
    """Each first token waits at least for its prompt's simulated prefill (a lower bound: a slower machine
    only adds to it). That the prefill cost grows with the prompt is checked in simulated time, where it is
    exact, by tests/mocker/test_engine.py."""
    srv = make_server("--speedup-ratio", "1", "--no-enable-prefix-caching")
    perf = PerfModel()  # the server's default timing model
    async with aiohttp.ClientSession() as s:
        for n in (64, 6000):  # one prefill chunk each (--max-num-batched-tokens 8192)
            prefill_s = perf.step_ms([(n, 0, 1.0)], 0, 0) / 1000
            ttft = await _ttft(s, srv.url, [10 + i % 2000 for i in range(n)])
            assert ttft >= prefill_s - 0.002, (n, ttft, prefill_s)  # less the event loop's timer resolution


async def test_queueing_beyond_max_num_seqs(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-num-seqs", "2")
    body = {"model": "tiny-chatml", "prompt": "hi", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as s:
        # six long requests (each ~30 s of decode): two run, four wait in the engine until the test hangs up
        streams = await asyncio.gather(*(s.post(srv.url + "/v1/completions", json=body) for _ in range(6)))
        assert [r.status for r in streams] == [200] * 6
        await wait_for_metric(srv.url, "dynamo_engine_waiting_requests", lambda v: v == 4)
        text = await metrics_text(srv.url)
        assert metric_value(text, "dynamo_engine_running_requests") == 2
        for r in streams:
            r.close()
        await wait_idle(srv.url)
