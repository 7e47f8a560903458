"""The responses store: eviction by size and age, background responses (progress, completion, cancel), DELETE."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

from dynamo_mono.engine import EngineRequest
from dynamo_mono.http.responses_routes import STORE
from dynamo_mono.serving.errors import QueueFull
from dynamo_mono.serving.responses_store import ResponsesStore, StoredResponse
from tests.openai.conftest import MakeServer, Server, reply, wait_until
from tests.responses.conftest import RESPONSES, request, valid_response

pytestmark = pytest.mark.timeout(20)


class Clock:
    """A virtual clock for the store's ttl (no sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def finished(store: ResponsesStore, rid: str) -> StoredResponse:
    rec = StoredResponse(rid, {}, [])
    store.add(rec)
    rec.status = "in_progress"
    store.finish(rec, "completed")
    return rec


# --- the store alone ---------------------------------------------------------------------------------
def test_size_evicts_the_oldest_finished() -> None:
    store = ResponsesStore(2, 60.0)
    for rid in ("a", "b", "c"):
        finished(store, rid)
    assert ("a" in store, "b" in store, "c" in store) == (False, True, True)


def test_running_responses_are_never_evicted() -> None:
    store = ResponsesStore(2, 60.0)
    running = StoredResponse("run", {}, [])
    store.add(running)
    finished(store, "a")
    finished(store, "b")  # evicts "a", not the older running one
    assert "run" in store and "a" not in store and "b" in store
    store.add(StoredResponse("run2", {}, []))  # evicts "b"
    with pytest.raises(QueueFull, match="responses-store-size 2"):
        store.add(StoredResponse("c", {}, []))


def test_ttl_expires_finished_responses_only() -> None:
    clock = Clock()
    store = ResponsesStore(10, 5.0, clock=clock)
    done = finished(store, "done")
    store.add(StoredResponse("running", {}, []))
    clock.now = 4.9
    assert store.get("done") is done
    clock.now = 5.0
    assert store.get("done") is None and "running" in store
    assert len(store) == 1


# --- through the routes ------------------------------------------------------------------------------
async def test_store_size_and_ttl_through_the_routes(make_server: MakeServer) -> None:
    server = await make_server(responses_store_size=2, responses_store_ttl=30.0)
    store = server.client.app[STORE]
    assert (store.size, store.ttl) == (2, 30.0)
    clock = Clock()
    store.clock = clock
    ids = [(await server.post(RESPONSES, request()))[1]["id"] for _ in range(3)]
    statuses = [(await server.client.get(f"{RESPONSES}/{rid}")).status for rid in ids]
    assert statuses == [404, 200, 200]
    clock.now = 30.0
    r = await server.client.get(f"{RESPONSES}/{ids[2]}")
    assert r.status == 404 and (await r.json())["error"]["code"] == "response_not_found"
    status, body = await server.post(RESPONSES, request(previous_response_id=ids[2]))
    assert status == 404 and body["error"]["param"] == "previous_response_id"


async def test_delete(server: Server) -> None:
    _, body = await server.post(RESPONSES, request())
    r = await server.client.delete(f"{RESPONSES}/{body['id']}")
    assert r.status == 200 and await r.json() == {"id": body["id"], "object": "response", "deleted": True}
    assert (await server.client.delete(f"{RESPONSES}/{body['id']}")).status == 404


def track_engine_streams(server: Server) -> tuple[list[str], list[str]]:
    """Wrap the scripted engine: (request ids started, request ids whose engine stream was closed)."""
    started: list[str] = []
    closed: list[str] = []
    inner = server.engine.generate

    async def generate(req: EngineRequest) -> AsyncIterator[Any]:
        started.append(req.request_id)
        try:
            async for out in inner(req):
                yield out
        finally:
            closed.append(req.request_id)

    server.engine.generate = generate  # type: ignore[method-assign]
    return started, closed


async def test_background_runs_and_completes(server: Server) -> None:
    hold = asyncio.Event()
    server.script(reply("Hello there, background.", per_output=2, hold=hold))
    status, body = await server.post(RESPONSES, request(background=True))
    assert status == 200, body
    r = valid_response(body)
    assert r.background is True and r.status in ("queued", "in_progress") and r.output == []
    store = server.client.app[STORE]
    await wait_until(lambda: store.get(r.id).status == "in_progress" and len(server.engine.requests) == 1,
                     "background generation started")
    got = await (await server.client.get(f"{RESPONSES}/{r.id}")).json()
    assert got["status"] == "in_progress" and got["usage"] is None
    hold.set()
    await wait_until(lambda: store.get(r.id).status == "completed", "background response completed")
    done = valid_response(await (await server.client.get(f"{RESPONSES}/{r.id}")).json())
    assert done.output_text == "Hello there, background." and done.usage.output_tokens > 0
    assert server.state.inflight == 0


async def test_background_cancel_frees_the_slot_and_the_engine_request(make_server: MakeServer) -> None:
    server = await make_server(max_inflight_requests=1)
    started, closed = track_engine_streams(server)
    server.script(reply("Hello there, never finished.", hold=asyncio.Event()))
    _, body = await server.post(RESPONSES, request(background=True))
    rid = body["id"]
    q = server.state.admission
    await wait_until(lambda: len(started) == 1 and q.active == 1, "background request generating")
    r = await server.client.post(f"{RESPONSES}/{rid}/cancel")
    assert r.status == 200
    cancelled = valid_response(await r.json())
    assert cancelled.status == "cancelled" and cancelled.id == rid
    assert closed == started and q.active == 0 and server.state.inflight == 0
    # cancelling again returns it as it is; the slot serves the next request
    again = await server.client.post(f"{RESPONSES}/{rid}/cancel")
    assert again.status == 200 and (await again.json())["status"] == "cancelled"
    server.script(reply("ok"))
    status, body = await server.post(RESPONSES, request())
    assert status == 200 and body["output"][0]["content"][0]["text"] == "ok"


async def test_background_cancel_while_queued(make_server: MakeServer) -> None:
    server = await make_server(max_inflight_requests=1)
    q = server.state.admission
    await q.acquire()  # another request holds the only slot
    _, body = await server.post(RESPONSES, request(background=True))
    rid = body["id"]
    await wait_until(lambda: q.waiting == 1, "background request waiting for admission")
    got = await (await server.client.get(f"{RESPONSES}/{rid}")).json()
    assert got["status"] == "queued"
    r = await server.client.post(f"{RESPONSES}/{rid}/cancel")
    assert (await r.json())["status"] == "cancelled"
    assert q.waiting == 0 and server.engine.requests == []
    q.release()
    assert q.active == 0


async def test_delete_cancels_a_running_background_response(server: Server) -> None:
    started, closed = track_engine_streams(server)
    server.script(reply("Hello there.", hold=asyncio.Event()))
    _, body = await server.post(RESPONSES, request(background=True))
    await wait_until(lambda: len(started) == 1, "background request generating")
    assert (await server.client.delete(f"{RESPONSES}/{body['id']}")).status == 200
    await wait_until(lambda: closed == started, "engine stream closed")
    await wait_until(lambda: server.state.inflight == 0, "request no longer in flight")


async def test_background_engine_failure_is_a_failed_response(server: Server) -> None:
    server.script(reply("Hello there, how are you?", error_after=2))
    _, body = await server.post(RESPONSES, request(background=True))
    store = server.client.app[STORE]
    await wait_until(lambda: store.get(body["id"]).status == "failed", "background response failed")
    got = valid_response(await (await server.client.get(f"{RESPONSES}/{body['id']}")).json())
    assert got.error.code == "server_error" and "simulated engine failure" in got.error.message


async def test_cancel_refusals(server: Server) -> None:
    _, body = await server.post(RESPONSES, request())
    r = await server.client.post(f"{RESPONSES}/{body['id']}/cancel")
    assert r.status == 400 and "only background responses" in (await r.json())["error"]["message"]
    assert (await server.client.post(f"{RESPONSES}/resp_unknown/cancel")).status == 404
    _, body = await server.post(RESPONSES, request(background=True))
    store = server.client.app[STORE]
    await wait_until(lambda: store.get(body["id"]).status == "completed", "background response completed")
    r = await server.client.post(f"{RESPONSES}/{body['id']}/cancel")
    assert r.status == 400 and "already completed" in (await r.json())["error"]["message"]


async def test_chaining_to_a_running_response_is_refused(server: Server) -> None:
    hold = asyncio.Event()
    server.script(reply("Hello there.", hold=hold))
    _, body = await server.post(RESPONSES, request(background=True))
    status, err = await server.post(RESPONSES, request(previous_response_id=body["id"]))
    assert status == 400 and err["error"]["param"] == "previous_response_id"
    hold.set()
