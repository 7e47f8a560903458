"""Admission control: priority-ordered waiting queue, 429 with Retry-After when it is full or too slow."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(90)


def _body(max_tokens: int, priority: int | None = None, stream: bool = False) -> dict:
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    if priority is not None:
        body["nvext"] = {"agent_hints": {"priority": priority}}
    return body


async def test_urgent_requests_overtake_a_full_queue(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1")
    url = srv.url + "/v1/chat/completions"
    done: dict[str, float] = {}

    async with aiohttp.ClientSession() as s:
        async def call(name: str, body: dict) -> None:
            async with s.post(url, json=body) as r:
                assert r.status == 200, await r.text()
                await r.read()
            done[name] = time.monotonic()

        tasks = [asyncio.create_task(call("blocker", _body(60)))]
        await asyncio.sleep(0.2)
        tasks += [asyncio.create_task(call(f"low{i}", _body(20, priority=5))) for i in range(4)]
        await asyncio.sleep(0.2)
        tasks.append(asyncio.create_task(call("urgent", _body(20, priority=-5))))
        await asyncio.gather(*tasks)
    order = sorted(done, key=done.get)
    assert order[0] == "blocker" and order[1] == "urgent", order


async def test_queue_full_is_429_with_retry_after(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1", "--max-queue-length", "1")
    url = srv.url + "/v1/chat/completions"
    async with aiohttp.ClientSession() as s:
        blocker = asyncio.create_task(s.post(url, json=_body(50)))
        await asyncio.sleep(0.2)
        waiter = asyncio.create_task(s.post(url, json=_body(5)))
        await asyncio.sleep(0.2)
        async with s.post(url, json=_body(5, stream=True)) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "1"
            body = await r.json()
            assert body["error"]["type"] == "rate_limit_error" and "queue" in body["error"]["message"]
        for t in (blocker, waiter):
            resp = await t
            assert resp.status == 200
            await resp.read()
            resp.release()


async def test_queue_wait_limit(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1", "--max-queue-wait", "0.3")
    url = srv.url + "/v1/chat/completions"
    async with aiohttp.ClientSession() as s:
        blocker = asyncio.create_task(s.post(url, json=_body(80)))
        await asyncio.sleep(0.2)
        async with s.post(url, json=_body(5)) as r:
            assert r.status == 429 and "waited" in (await r.json())["error"]["message"]
        resp = await blocker
        assert resp.status == 200
        resp.release()
