"""Request lifecycle under stress: SIGTERM drain, random disconnects, auth/CORS/request ids, timeouts, instance health."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal

import aiohttp
import pytest

from conformance.server import metric_value
from conformance.waits import HANG_GUARD_S, metrics_text, wait_for_metric, wait_idle, wait_until

pytestmark = pytest.mark.timeout(60)

MODEL = "tiny-chatml"
CHAT = "/v1/chat/completions"
# ~32 s of simulated decode at --speedup-ratio 1 (8 ms a step): a request this long is still running when
# the test acts on it (hangs up, signals the server), however slow the machine; the test ends it itself.
LONG_TOKENS = 4000


def _chat(max_tokens: int, stream: bool = False, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "tell me a story"}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": stream, **extra}


def _events(raw: str) -> list[str]:
    return [e for e in raw.split("\n\n") if e.strip()]


def _openai_error(body: dict) -> dict:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, body
    return err


def _clean(text: str) -> None:
    """No traceback, source path or exception repr leaks into anything a client reads."""
    for leak in ("Traceback", "File \"", ".py\"", "site-packages", "dynamo_mono/", "Error(", "Exception("):
        assert leak not in text, text


# --- SIGTERM drain ---------------------------------------------------------------------------------
async def test_sigterm_drains_inflight_stream_and_refuses_new_work(make_server) -> None:
    # One slot: a long stream holds it (the server stays draining until the test hangs up on it) and a
    # second stream waits in the admission queue, in flight when SIGTERM arrives; it runs once the first
    # is gone and must still be served to the end.
    srv = make_server("--speedup-ratio", "1", "--max-inflight-requests", "1")
    async with aiohttp.ClientSession() as s:
        holder = await s.post(srv.url + CHAT, json=_chat(LONG_TOKENS, stream=True))
        assert holder.status == 200
        queued = asyncio.create_task(s.post(srv.url + CHAT, json=_chat(100, stream=True)))
        await wait_for_metric(srv.url, "dynamo_frontend_queued_requests", lambda v: v == 1)
        srv.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:  # the signal is handled asynchronously
            async with s.get(srv.url + "/ready") as r:
                return r.status == 503 and (await r.json())["reason"] == "draining"

        await wait_until(draining, "/ready to turn 503 (draining) after SIGTERM")
        for path, body in ((CHAT, _chat(5)), ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 2})):
            async with s.post(srv.url + path, json=body) as r:
                assert r.status == 503
                assert r.headers["Retry-After"]
                err = _openai_error(await r.json())
                assert err["code"] == "shutting_down" and err["type"] == "service_unavailable"
        async with s.get(srv.url + "/health") as r:
            assert r.status == 503 and (await r.json())["draining"] is True
        assert not queued.done()  # still waiting for the slot
        holder.close()  # frees the slot for the queued stream
        stream = await queued
        assert stream.status == 200
        events = _events((await stream.read()).decode())
    assert events[-1] == "data: [DONE]"
    finals = [json.loads(e[6:]) for e in events[:-1]]
    assert finals[-1]["choices"][0]["finish_reason"] == "length"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in finals if c["choices"])
    assert content
    assert srv.proc.wait(HANG_GUARD_S) == 0
    assert "draining 2 in-flight" in srv.log()


@pytest.mark.parametrize("stream", [True, False])
async def test_sigterm_shutdown_timeout_aborts_long_request(make_server, stream: bool) -> None:
    srv = make_server("--speedup-ratio", "1", "--shutdown-timeout", "0.5")
    async with aiohttp.ClientSession() as s:
        if stream:
            resp = await s.post(srv.url + CHAT, json=_chat(LONG_TOKENS, stream=True))
            await resp.content.readline()
            pending = asyncio.create_task(resp.read())
        else:
            pending = asyncio.create_task(s.post(srv.url + CHAT, json=_chat(LONG_TOKENS)))
            await wait_for_metric(srv.url, "dynamo_engine_running_requests", lambda v: v == 1)
        srv.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(srv.proc.wait, HANG_GUARD_S)
        done, _ = await asyncio.wait([pending], timeout=HANG_GUARD_S)
        assert done, "the client was left hanging after the server exited"
        if not pending.exception():
            result = pending.result()
            if stream:
                assert b"[DONE]" not in result  # cut short, not reported as complete
            else:
                assert result.status >= 500  # never a 200 with a truncated completion
                result.release()
    # The request had ~30 s of decode left: the server exited without waiting for it.
    assert rc == 0
    assert "aborting 1 request" in srv.log()


# --- random disconnects ----------------------------------------------------------------------------
async def _one_random_client(s: aiohttp.ClientSession, url: str, rng: random.Random) -> tuple[str, str, str]:
    """One request that hangs up at a random point, or reads to the end; returns (route, mode, outcome).

    A request the client hangs up on asks for LONG_TOKENS (with ignore_eos where the API has it), so it is
    still generating when the client goes away, whatever the machine's speed; one read to the end is short.
    """
    stream = rng.random() < 0.6
    route = rng.choice(("chat", "chat", "completions", "messages"))
    mode = rng.choice(("events", "delay", "complete")) if stream else rng.choice(("delay", "complete"))
    max_tokens = rng.randint(2, 24) if mode == "complete" else LONG_TOKENS
    if route == "chat":
        path, body = CHAT, _chat(max_tokens, stream)
    elif route == "completions":
        path, body = "/v1/completions", {"model": MODEL, "prompt": "once upon a time " * rng.randint(1, 40),
                                         "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    else:
        path, body = "/v1/messages", {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                                      "messages": [{"role": "user", "content": "hi " * rng.randint(1, 80)}]}
    if mode == "complete":
        async with s.post(url + path, json=body) as resp:
            await resp.read()
            assert resp.status == 200, (resp.status, body)
        return route, mode, "complete"
    if mode == "events":
        resp = await s.post(url + path, json=body)
        assert resp.status == 200, (resp.status, body)
        for _ in range(rng.randint(0, 6)):
            if not await resp.content.readline():
                break
        resp.close()  # drops the connection mid-stream
        return route, mode, "hung_up"
    try:
        async with asyncio.timeout(rng.uniform(0.0, 0.4)):  # hangs up at a random moment
            async with s.post(url + path, json=body) as resp:
                await resp.read()
        return route, mode, "complete"
    except TimeoutError:
        return route, mode, "hung_up"


async def test_random_disconnects_leak_nothing(make_server) -> None:
    srv = make_server("--speedup-ratio", "1")
    rng = random.Random(1234)
    total, concurrency = 1000, 64
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as s:
        async def run_one(seed: float) -> tuple[str, str, str]:
            async with sem:
                return await _one_random_client(s, srv.url, random.Random(seed))

        results = await asyncio.gather(*(run_one(rng.random()) for _ in range(total)))
        await wait_idle(srv.url)  # nothing leaked: no request in flight or queued, no KV block held
        async with s.post(srv.url + CHAT, json=_chat(4)) as r:
            assert r.status == 200
        disconnected = metric_value(await metrics_text(srv.url), "dynamo_frontend_disconnected_clients")
    modes = {m: sum(1 for _, mode, _ in results if mode == m) for m in ("events", "delay", "complete")}
    print(f"\n{total} requests with random disconnects at concurrency {concurrency}: {modes}")
    assert min(modes.values()) > total // 10, modes  # the seed exercises every mode
    for route, mode, outcome in results:
        # /v1/messages has no ignore_eos: its long requests may end by themselves before the hang-up
        if mode == "complete" or route != "messages":
            assert outcome == ("complete" if mode == "complete" else "hung_up"), (route, mode, outcome)
    # A hang-up after the stream's headers always leaves a request generating: the server must see it go.
    mid_stream = sum(1 for route, mode, _ in results if mode == "events" and route != "messages")
    assert disconnected >= mid_stream, ("hang-ups were not seen as disconnects", disconnected, mid_stream)
    assert "internal server error" not in srv.log() and "Traceback" not in srv.log()


# --- security basics -------------------------------------------------------------------------------
async def test_api_key_required_on_v1_only(make_server) -> None:
    srv = make_server("--api-key", "s3cret")
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": "s3cret"}):
            async with s.post(srv.url + CHAT, json=_chat(2), headers=headers) as r:
                assert r.status == 401, headers
                err = _openai_error(await r.json())
                assert err["type"] == "authentication_error" and "s3cret" not in err["message"]
        async with s.get(srv.url + "/v1/models") as r:
            assert r.status == 401
            _openai_error(await r.json())
        async with s.post(srv.url + "/v1/messages", json={"model": MODEL, "max_tokens": 2,
                                                          "messages": [{"role": "user", "content": "x"}]}) as r:
            assert r.status == 401
            body = await r.json()
            assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        for headers in ({"Authorization": "Bearer s3cret"}, {"x-api-key": "s3cret"}):
            async with s.post(srv.url + CHAT, json=_chat(2), headers=headers) as r:
                assert r.status == 200, headers
        for path in ("/health", "/live", "/ready", "/metrics"):
            async with s.get(srv.url + path) as r:
                assert r.status == 200, path


async def test_request_id_echoed_everywhere_and_generated(server) -> None:
    url = server.url
    async with aiohttp.ClientSession() as s:
        async with s.post(url + CHAT, json=_chat(3), headers={"x-request-id": "req-unary-1"}) as r:
            assert r.status == 200 and r.headers["x-request-id"] == "req-unary-1"
            assert (await r.json())["id"].endswith("req-unary-1")
        async with s.post(url + CHAT, json=_chat(3, stream=True), headers={"x-request-id": "req-stream-1"}) as r:
            assert r.status == 200 and r.headers["x-request-id"] == "req-stream-1"
            await r.read()
        async with s.post(url + CHAT, data=b"{oops", headers={"x-request-id": "req-bad-1",
                                                             "Content-Type": "application/json"}) as r:
            assert r.status == 400 and r.headers["x-request-id"] == "req-bad-1"
        async with s.get(url + "/v1/nowhere", headers={"x-request-id": "req-404"}) as r:
            assert r.status == 404 and r.headers["x-request-id"] == "req-404"
        seen = set()
        for _ in range(2):
            async with s.post(url + CHAT, json=_chat(2)) as r:
                rid = r.headers["x-request-id"]
                assert re.fullmatch(r"[0-9a-f]{24}", rid)  # per-process random prefix + counter
                seen.add(rid)
        assert len(seen) == 2
        async with s.get(url + "/v1/models", headers={"x-request-id": "x" * 500}) as r:
            assert r.headers["x-request-id"] != "x" * 500  # unbounded ids are replaced, not echoed


async def test_shared_client_request_id_keeps_requests_apart(make_server) -> None:
    """Clients reusing one x-request-id for concurrent requests: each is still its own request to the router."""
    srv = make_server("--speedup-ratio", "1", "--num-instances", "2", "--router-mode", "kv")
    same = {"x-request-id": "shared-id"}

    async def loads(s: aiohttp.ClientSession) -> list[int]:
        async with s.get(srv.url + "/health") as r:
            return [i["load"]["active_requests"] for i in (await r.json())["instances"]]

    async def total_is(s: aiohttp.ClientSession, n: int) -> bool:
        return sum(await loads(s)) == n

    async with aiohttp.ClientSession() as s:
        # Four long streams, all generating until the test hangs up: the router counts each on its own.
        streams = [await s.post(srv.url + CHAT, json=_chat(LONG_TOKENS, stream=True), headers=same)
                   for _ in range(4)]
        for r in streams:
            assert r.status == 200 and r.headers["x-request-id"] == "shared-id"
            await r.content.readline()
        await wait_until(lambda: total_is(s, 4), "the router to count four active requests")
        assert await loads(s) == [2, 2], "load-aware routing spreads them"
        for r in streams[:2]:
            r.close()
        await wait_until(lambda: total_is(s, 2), "the router to count the two left")
        for r in streams[2:]:
            r.close()
        await wait_until(lambda: total_is(s, 0), "the router to count none")
        await wait_idle(srv.url)

        # Four concurrent streams read to the end under the same id: each completes on its own.
        async def complete() -> None:
            async with s.post(srv.url + CHAT, json=_chat(80, stream=True), headers=same) as r:
                events = _events((await r.read()).decode())
                assert events[-1] == "data: [DONE]" and '"error"' not in events[-2]
                assert r.headers["x-request-id"] == "shared-id"

        await asyncio.gather(*(complete() for _ in range(4)))
        await wait_idle(srv.url)
        assert await loads(s) == [0, 0]


async def test_cors_off_by_default(server) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(server.url + CHAT, json=_chat(2), headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
        async with s.options(server.url + CHAT, headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_cors_on_with_origins(make_server) -> None:
    srv = make_server("--cors-origins", "https://app.example", "--api-key", "k")
    ok = {"Origin": "https://app.example"}
    async with aiohttp.ClientSession() as s:
        async with s.options(srv.url + CHAT, headers={**ok, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization"}) as r:
            assert r.status in (200, 204)  # preflight carries no credentials and still succeeds
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
        auth = {**ok, "Authorization": "Bearer k"}
        async with s.post(srv.url + CHAT, json=_chat(2), headers=auth) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with s.post(srv.url + CHAT, json=_chat(2, stream=True), headers=auth) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
            await r.read()
        async with s.post(srv.url + CHAT, json=_chat(2), headers=ok) as r:  # a browser must be able to read the 401
            assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with s.post(srv.url + CHAT, json=_chat(2), headers={"Origin": "https://other.example",
                                                                   "Authorization": "Bearer k"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


async def test_error_bodies_leak_no_internals(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--mocker-fail-after", "2", "--api-key", "k")
    h = {"Authorization": "Bearer k"}
    async with aiohttp.ClientSession() as s:
        cases = [("POST", CHAT, {"data": b"\xff\xfe", "headers": {**h, "Content-Type": "application/json"}}),
                 ("POST", CHAT, {"json": {"model": MODEL, "messages": [{"role": "user"}]}, "headers": h}),
                 ("POST", CHAT, {"json": _chat(5), "headers": h}),
                 ("POST", CHAT, {"json": _chat(5, stream=True), "headers": h}),
                 ("POST", "/v1/messages", {"json": {"model": MODEL, "max_tokens": "x"}, "headers": h}),
                 ("GET", "/v1/models/%00%ff", {"headers": h}),
                 ("DELETE", "/v1/models", {"headers": h}),
                 ("POST", CHAT, {"json": _chat(2)})]
        for method, path, kw in cases:
            async with s.request(method, srv.url + path, **kw) as r:
                text = await r.text()
                assert r.status < 500 or r.status == 503, (path, r.status, text)
                _clean(text)


# --- request timeout -------------------------------------------------------------------------------
async def test_request_timeout_ends_requests_and_frees_blocks(make_server) -> None:
    # Each request below needs ~30 s of decode: only the 0.5 s request timeout can end them as they end.
    srv = make_server("--speedup-ratio", "1", "--request-timeout", "0.5")
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + CHAT, json=_chat(LONG_TOKENS)) as r:
            assert r.status == 504
            err = _openai_error(await r.json())
            assert err["code"] == "request_timeout" and err["type"] == "timeout_error"
        async with s.post(srv.url + CHAT, json=_chat(LONG_TOKENS, stream=True)) as r:
            assert r.status == 200
            events = _events(await r.text())
        assert events[-1] == "data: [DONE]"
        err = json.loads(events[-2][6:])["error"]
        assert err["code"] == "request_timeout"
        async with s.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "x",
                                                              "max_tokens": LONG_TOKENS, "ignore_eos": True}) as r:
            assert r.status == 504
        async with s.post(srv.url + CHAT, json=_chat(3)) as r:  # short requests still succeed
            assert r.status == 200
        text = await wait_idle(srv.url)
    assert re.search(r'dynamo_frontend_requests_total\{[^}]*error_type="(http_504|request_timeout)"', text)


# --- instance health -------------------------------------------------------------------------------
# A crash lasts far longer than any test (--mocker-crash-duration 600); the test ends it with a request
# pinned to the crashed instance that carries mocker.recover, so every check runs inside the window.
CRASH_ARGS = ("--speedup-ratio", "0", "--mocker-crash-duration", "600")


def _crash(instance: int) -> dict:
    return _chat(2, nvext={"annotations": ["mocker.crash"], "backend_instance_id": instance})


def _recover(instance: int) -> dict:
    return _chat(2, nvext={"annotations": ["mocker.recover"], "backend_instance_id": instance})


async def _instance_states(s: aiohttp.ClientSession, url: str) -> dict[int, str]:
    async with s.get(url + "/health") as r:
        return {i["worker_id"]: i["state"] for i in (await r.json())["instances"]}


@pytest.mark.parametrize("router_mode", ["round-robin", "kv"])
async def test_crashed_instance_is_skipped_until_it_returns(make_server, router_mode: str) -> None:
    srv = make_server(*CRASH_ARGS, "--num-instances", "2", "--router-mode", router_mode)
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + CHAT, json=_crash(0)) as r:
            assert r.status == 503 and r.headers["Retry-After"]  # the crashing request itself fails cleanly
        assert await _instance_states(s, srv.url) == {0: "unavailable", 1: "ready"}
        async with s.get(srv.url + "/ready") as r:
            assert r.status == 200  # one healthy instance is enough to take traffic
        for i in range(8):
            async with s.post(srv.url + CHAT, json=_chat(4, stream=i % 2 == 1)) as r:
                text = await r.text()
                assert r.status == 200 and '"error"' not in text, text
        assert await _instance_states(s, srv.url) == {0: "unavailable", 1: "ready"}  # still inside the window
        async with s.post(srv.url + CHAT, json=_recover(0)) as r:
            assert r.status == 200, await r.text()
        assert await _instance_states(s, srv.url) == {0: "ready", 1: "ready"}
        async with s.post(srv.url + CHAT, json=_chat(2, nvext={"backend_instance_id": 0})) as r:
            assert r.status == 200


async def test_only_instance_crashed_means_not_ready(make_server) -> None:
    srv = make_server(*CRASH_ARGS, "--num-instances", "1")
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + CHAT, json=_crash(0)) as r:
            assert r.status == 503
        async with s.get(srv.url + "/ready") as r:
            assert r.status == 503 and "no ready instance" in (await r.json())["reason"]
        async with s.get(srv.url + "/health") as r:
            assert r.status == 503 and (await r.json())["status"] == "unhealthy"
        for stream in (False, True):
            async with s.post(srv.url + CHAT, json=_chat(2, stream=stream)) as r:
                assert r.status == 503 and r.headers["Retry-After"]
                assert _openai_error(await r.json())["code"] == "no_instance"
        async with s.post(srv.url + "/v1/messages", json={"model": MODEL, "max_tokens": 2,
                                                          "messages": [{"role": "user", "content": "x"}]}) as r:
            assert r.status == 503 and r.headers["Retry-After"]
            assert (await r.json())["error"]["type"] == "overloaded_error"
        async with s.get(srv.url + "/ready") as r:
            assert r.status == 503  # still inside the window
        async with s.post(srv.url + CHAT, json=_recover(0)) as r:
            assert r.status == 200, await r.text()
        async with s.get(srv.url + "/ready") as r:
            assert r.status == 200
        async with s.post(srv.url + CHAT, json=_chat(2)) as r:
            assert r.status == 200


async def test_crashed_instance_returns_by_itself_after_the_crash_duration(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--num-instances", "1", "--mocker-crash-duration", "0.5")
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + CHAT, json=_crash(0)) as r:
            assert r.status == 503

        async def ready() -> bool:
            async with s.get(srv.url + "/ready") as r:
                return r.status == 200

        await wait_until(ready, "/ready to return to 200 after the crash window")
        async with s.post(srv.url + CHAT, json=_chat(2)) as r:
            assert r.status == 200
