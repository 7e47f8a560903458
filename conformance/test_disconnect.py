"""A client that goes away mid-request frees its engine request, KV blocks and in-flight slot."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from conformance.server import metric_value
from conformance.waits import metrics_text, wait_for_metric, wait_idle

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("stream", [True, False])
async def test_disconnect_aborts_and_frees(make_server, stream: bool) -> None:
    # 4000 decode steps of 80 ms (--speedup-ratio 0.1): over 5 minutes of generation, so the request is still
    # running when the client goes away, and the engine going idle within the wait's hang guard means it was
    # aborted, not finished, however fast or slow the machine.
    srv = make_server("--speedup-ratio", "0.1")
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "long story " * 200}],
            "max_tokens": 4000, "ignore_eos": True, "stream": stream}
    session = aiohttp.ClientSession()
    try:
        if stream:
            resp = await session.post(srv.url + "/v1/chat/completions", json=body)
            await resp.content.readline()  # the first event arrived: generation is running
        else:
            task = asyncio.create_task(session.post(srv.url + "/v1/chat/completions", json=body))
            await wait_for_metric(srv.url, "dynamo_engine_running_requests", lambda v: v == 1)
        text = await metrics_text(srv.url)
        assert metric_value(text, "dynamo_frontend_inflight_requests") == 1
        assert metric_value(text, "dynamo_engine_kv_active_blocks") > 0
    finally:
        await session.close()  # drops the connection mid-request
        if not stream:
            task.cancel()
    text = await wait_idle(srv.url)
    assert metric_value(text, "dynamo_frontend_disconnected_clients") == 1
    assert re.search(r'dynamo_frontend_requests_total\{[^}]*status="cancelled"[^}]*\} 1\.0', text)
