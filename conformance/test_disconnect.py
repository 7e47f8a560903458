"""A client that goes away mid-request frees its engine request, KV blocks and in-flight slot."""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp
import pytest

from conformance.server import metric_value

pytestmark = pytest.mark.timeout(60)


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/metrics") as r:
            return await r.text()


async def _wait_idle(url: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = await _metrics(url)
        idle = (metric_value(text, "dynamo_frontend_inflight_requests") == 0
                and metric_value(text, "dynamo_engine_kv_active_blocks") == 0
                and metric_value(text, "dynamo_engine_running_requests") == 0)
        if idle or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stream", [True, False])
async def test_disconnect_aborts_and_frees(make_server, stream: bool) -> None:
    srv = make_server("--speedup-ratio", "1")
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "long story " * 200}],
            "max_tokens": 4000, "ignore_eos": True, "stream": stream}
    session = aiohttp.ClientSession()
    try:
        if stream:
            resp = await session.post(srv.url + "/v1/chat/completions", json=body)
            await resp.content.readline()  # the first event arrived: generation is running
        else:
            task = asyncio.create_task(session.post(srv.url + "/v1/chat/completions", json=body))
            await asyncio.sleep(0.5)
        text = await _metrics(srv.url)
        assert metric_value(text, "dynamo_frontend_inflight_requests") == 1
        assert metric_value(text, "dynamo_engine_kv_active_blocks") > 0
    finally:
        await session.close()  # drops the connection mid-request
        if not stream:
            task.cancel()
    t0 = time.monotonic()
    text = await _wait_idle(srv.url)
    freed_after = time.monotonic() - t0
    assert metric_value(text, "dynamo_frontend_inflight_requests") == 0
    assert metric_value(text, "dynamo_engine_kv_active_blocks") == 0, "KV blocks leaked"
    assert metric_value(text, "dynamo_engine_running_requests") == 0
    assert metric_value(text, "dynamo_frontend_disconnected_clients") == 1
    assert re.search(r'dynamo_frontend_requests_total\{[^}]*status="cancelled"[^}]*\} 1\.0', text)
    assert freed_after < 2.0
