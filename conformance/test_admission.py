"""Admission control: priority-ordered waiting queue, 429 with Retry-After when it is full or too slow.

Every test orders its requests by waiting for the server's state (a streamed request's headers mean it
was admitted; the queued gauge counts waiters), and each slot is held by a request far longer than the
test (it ends when the test hangs up), so no outcome depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from conformance.waits import wait_for_metric, wait_until

pytestmark = pytest.mark.timeout(90)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
QUEUED = "dynamo_frontend_queued_requests"
INFLIGHT = "dynamo_frontend_inflight_requests"
# ~32 s of simulated decode at --speedup-ratio 1 (8 ms a step): a request this long holds its slot until
# the test closes it, however slow the machine.
HOLD_TOKENS = 4000


def _body(max_tokens: int, priority: int | None = None, stream: bool = False) -> dict:
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    if priority is not None:
        body["nvext"] = {"agent_hints": {"priority": priority}}
    return body


async def _hold_slot(s: aiohttp.ClientSession, url: str, priority: int | None = None) -> aiohttp.ClientResponse:
    """A streamed chat request that was admitted (its headers arrived) and runs until the test closes it."""
    r = await s.post(url + CHAT, json=_body(HOLD_TOKENS, priority, stream=True))
    assert r.status == 200, await r.text()
    return r


async def test_urgent_requests_overtake_a_full_queue(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1")
    async with aiohttp.ClientSession() as s:
        blocker = await _hold_slot(s, srv.url)
        # Each waiter, once admitted, holds the slot itself: exactly one is admitted per released slot.
        waiters = {}
        for i in range(4):  # one at a time, so their arrival order is known
            waiters[f"low{i}"] = asyncio.create_task(_hold_slot(s, srv.url, priority=5))
            await wait_for_metric(srv.url, QUEUED, lambda v, n=i + 1: v == n)
        waiters["urgent"] = asyncio.create_task(_hold_slot(s, srv.url, priority=-5))
        await wait_for_metric(srv.url, QUEUED, lambda v: v == 5)

        order = []
        holder = blocker
        for queued_after in (4, 3):  # release the slot twice; see who gets it each time
            holder.close()
            await wait_for_metric(srv.url, QUEUED, lambda v: v == queued_after)
            names = await wait_until(lambda: [n for n, t in waiters.items() if t.done()], "a waiter's headers")
            assert len(names) == 1, names
            order.append(names[0])
            holder = waiters.pop(names[0]).result()
        holder.close()
        for t in waiters.values():
            t.cancel()
        await asyncio.gather(*waiters.values(), return_exceptions=True)
    assert order == ["urgent", "low0"], order  # the urgent one first, then the earliest of equal priority


async def test_queue_full_is_429_with_retry_after(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1", "--max-queue-length", "1")
    url = srv.url + CHAT
    async with aiohttp.ClientSession() as s:
        blocker = await _hold_slot(s, srv.url)
        waiter = asyncio.create_task(s.post(url, json=_body(5)))
        await wait_for_metric(srv.url, QUEUED, lambda v: v == 1)
        async with s.post(url, json=_body(5, stream=True)) as r:
            assert r.status == 429
            assert r.headers["Retry-After"] == "1"
            body = await r.json()
            assert body["error"]["type"] == "rate_limit_error" and "queue" in body["error"]["message"]
        blocker.close()  # frees the slot: the queued request runs to the end
        resp = await waiter
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["usage"]["completion_tokens"] == 5
        resp.release()


async def test_queue_wait_limit(make_server) -> None:
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1", "--max-queue-wait", "0.3")
    async with aiohttp.ClientSession() as s:
        blocker = await _hold_slot(s, srv.url)
        async with s.post(srv.url + CHAT, json=_body(5)) as r:  # waits its 0.3 s behind the held slot
            assert r.status == 429 and "waited" in (await r.json())["error"]["message"]
            assert r.headers["Retry-After"] == "1"
        blocker.close()
        await wait_for_metric(srv.url, INFLIGHT, lambda v: v == 0)
        async with s.post(srv.url + CHAT, json=_body(5)) as r:
            assert r.status == 200


def _message(max_tokens: int, stream: bool, text: str = "hello") -> dict:
    return {"model": "tiny-chatml", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("limit", ["--max-inflight-requests", "--max-inflight-per-model"])
async def test_messages_get_429_with_retry_after_like_chat(make_server, limit: str) -> None:
    """/v1/messages passes the same admission control as chat: refused with 429 + Retry-After (Anthropic
    envelope) when no slot and no queue place is free, and holding a slot while it generates."""
    # echo: a /v1/messages request (no ignore_eos there) answers with its ~3500-token prompt, ~28 s of decode.
    srv = make_server("--speedup-ratio", "1", "--mocker-output", "echo", limit, "1", "--max-queue-length", "0")
    async with aiohttp.ClientSession() as s:
        blocker = await _hold_slot(s, srv.url)
        async with s.post(srv.url + CHAT, json=_body(5)) as r:  # the reference behaviour
            assert r.status == 429 and r.headers["Retry-After"] == "1"
        for stream in (False, True):
            async with s.post(srv.url + MESSAGES, json=_message(5, stream)) as r:
                assert r.status == 429, (stream, r.status, await r.text())
                assert r.headers["Retry-After"] == "1"
                assert r.headers["Content-Type"].startswith("application/json")
                body = await r.json()
                assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
                assert "queue" in body["error"]["message"]
        blocker.close()
        await wait_for_metric(srv.url, INFLIGHT, lambda v: v == 0)

        # A /v1/messages request holds the slot in turn: chat is refused while it generates.
        holder = await s.post(srv.url + MESSAGES, json=_message(HOLD_TOKENS, True, "tell me a long story " * 700))
        assert holder.status == 200, await holder.text()
        await holder.content.readuntil(b"event: content_block_delta")  # generating
        async with s.post(srv.url + CHAT, json=_body(5)) as r:
            assert r.status == 429, (r.status, await r.text())
        holder.close()
        await wait_for_metric(srv.url, INFLIGHT, lambda v: v == 0)
