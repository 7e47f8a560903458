"""Admission through the OpenAI routes in-process: 429 before a stream starts, priority order, slots released."""

from __future__ import annotations

import asyncio

import pytest

from tests.openai.conftest import MODEL, MakeServer, assert_envelope, chat, completion, parse_sse, reply, \
    wait_until

pytestmark = pytest.mark.timeout(10)
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("stream", [False, True])
async def test_full_admission_queue_is_429_before_streaming(make_server: MakeServer, path: str,
                                                             stream: bool) -> None:
    server = await make_server(max_inflight_requests=1, max_queue_length=0)
    q = server.state.admission
    await q.acquire()  # another request holds the only slot
    payload = chat(stream=stream) if path == CHAT else completion(stream=stream)
    r = await server.client.post(path, json=payload)
    assert r.status == 429 and r.headers.get("Retry-After") == "1"
    assert assert_envelope(await r.json(), 429)["type"] == "rate_limit_error"
    assert server.engine.requests == []
    q.release()
    assert q.active == 0
    status, _ = await server.post(path, payload if not stream else {**payload, "stream": False})
    assert status == 200 and q.active == 0


async def test_admission_slot_is_held_while_streaming_and_released_after(make_server: MakeServer) -> None:
    server = await make_server(max_inflight_requests=2)
    q = server.state.admission
    hold = asyncio.Event()
    server.script(reply("Hello there.", hold=hold))
    resp = await server.client.post(CHAT, json=chat(stream=True))
    assert resp.status == 200
    await wait_until(lambda: len(server.engine.requests) == 1, "request dispatched")
    assert q.active == 1
    hold.set()
    parse_sse(await resp.text())
    await wait_until(lambda: q.active == 0, "slot released")


async def test_client_disconnect_mid_stream_releases_the_slot(make_server: MakeServer) -> None:
    server = await make_server(max_inflight_requests=1, max_inflight_per_model=1)
    model_q, server_q = server.state.models[MODEL].admission, server.state.admission
    hold = asyncio.Event()
    server.script(reply("Hello there, how are you today?", hold=hold))
    resp = await server.client.post(CHAT, json=chat(stream=True))
    first = await resp.content.readline()  # the first chunk is out: the stream has started
    assert first.startswith(b"data: {")
    assert (model_q.active, server_q.active) == (1, 1)
    resp.close()  # the client goes away
    hold.set()  # the next write finds the connection closed
    await wait_until(lambda: (model_q.active, server_q.active) == (0, 0), "slots released after the disconnect")
    await wait_until(lambda: server.state.inflight == 0, "request no longer in flight")
    server.script(reply("ok"))
    status, _ = await server.post(CHAT, chat())
    assert status == 200


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_refusal_by_the_server_queue_gives_back_the_model_slot(make_server: MakeServer, path: str) -> None:
    server = await make_server(max_inflight_requests=1, max_inflight_per_model=4, max_queue_length=0)
    model_q, server_q = server.state.models[MODEL].admission, server.state.admission
    await server_q.acquire()
    payload = chat() if path == CHAT else completion()
    status, _ = await server.post(path, payload)
    assert status == 429
    server_q.release()
    assert (model_q.active, server_q.active) == (0, 0)


async def test_waiting_requests_are_admitted_by_priority(make_server: MakeServer) -> None:
    """A blocker holds the only slot; four priority-5 requests queue, then a priority -5 one: it goes next."""
    server = await make_server(max_inflight_requests=1)
    q = server.state.admission
    release_blocker = asyncio.Event()
    blocker_reply, quick_reply = reply("blocking", hold=release_blocker), reply("quick")

    def script(req, tok):
        return (blocker_reply if "BLOCKER" in tok.decode(req.token_ids) else quick_reply)(req, tok)

    server.script(script)

    def body(name: str, priority: int | None = None) -> dict:
        hints = {"nvext": {"agent_hints": {"priority": priority}}} if priority is not None else {}
        return chat(name, **hints)

    async def call(name: str, priority: int | None = None) -> None:
        status, data = await server.post(CHAT, body(name, priority))
        assert status == 200, data

    tasks = [asyncio.create_task(call("BLOCKER"))]
    await wait_until(lambda: len(server.engine.requests) == 1, "blocker running")
    for i in range(4):
        tasks.append(asyncio.create_task(call(f"low {i}", 5)))
        await wait_until(lambda: q.waiting == i + 1, f"low {i} queued")
    tasks.append(asyncio.create_task(call("urgent", -5)))
    await wait_until(lambda: q.waiting == 5, "urgent queued")
    release_blocker.set()
    await asyncio.gather(*tasks)
    tok = server.engine.tokenizer
    order = [next(n for n in ("BLOCKER", "urgent", "low 0", "low 1", "low 2", "low 3") if n in tok.decode(r.token_ids))
             for r in server.engine.requests]
    assert order == ["BLOCKER", "urgent", "low 0", "low 1", "low 2", "low 3"]
    assert q.active == 0
