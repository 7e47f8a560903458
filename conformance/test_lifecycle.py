"""Request lifecycle under stress: SIGTERM drain, random disconnects, auth/CORS/request ids, timeouts, instance health."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time

import aiohttp
import pytest

from conformance.server import metric_value

pytestmark = pytest.mark.timeout(60)

MODEL = "tiny-chatml"
CHAT = "/v1/chat/completions"


def _chat(max_tokens: int, stream: bool = False, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "tell me a story"}],
            "max_tokens": max_tokens, "ignore_eos": True, "stream": stream, **extra}


IDLE_GAUGES = ("dynamo_frontend_inflight_requests", "dynamo_frontend_queued_requests",
               "dynamo_engine_kv_active_blocks", "dynamo_engine_running_requests", "dynamo_engine_waiting_requests")


async def _wait_idle(s: aiohttp.ClientSession, url: str, timeout: float = 8.0) -> dict[str, float]:
    """The idle gauges once all are 0 (or their last values when the deadline passes)."""
    deadline = time.monotonic() + timeout
    while True:
        async with s.get(url + "/metrics") as r:
            text = await r.text()
        values = {g: metric_value(text, g) for g in IDLE_GAUGES}
        if not any(values.values()) or time.monotonic() > deadline:
            return values
        await asyncio.sleep(0.05)


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
    srv = make_server("--speedup-ratio", "1")
    async with aiohttp.ClientSession() as s:
        stream = await s.post(srv.url + CHAT, json=_chat(100, stream=True))  # ~2 s: outlives the checks
        assert stream.status == 200
        await stream.content.readline()  # generation is running
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        while True:  # the signal is handled asynchronously
            async with s.get(srv.url + "/ready") as r:
                if r.status == 503:
                    assert (await r.json())["reason"] == "draining"
                    break
            assert time.monotonic() < deadline, "/ready never turned 503 after SIGTERM"
            await asyncio.sleep(0.02)
        for path, body in ((CHAT, _chat(5)), ("/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 2})):
            async with s.post(srv.url + path, json=body) as r:
                assert r.status == 503
                assert r.headers["Retry-After"]
                err = _openai_error(await r.json())
                assert err["code"] == "shutting_down" and err["type"] == "service_unavailable"
        async with s.get(srv.url + "/health") as r:
            assert r.status == 503 and (await r.json())["draining"] is True
        events = _events((await stream.read()).decode())
    assert events[-1] == "data: [DONE]"
    finals = [json.loads(e[6:]) for e in events[:-1]]
    assert finals[-1]["choices"][0]["finish_reason"] == "length"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in finals if c["choices"])
    assert content
    assert srv.proc.wait(10) == 0
    assert "draining 1 in-flight" in srv.log()


@pytest.mark.parametrize("stream", [True, False])
async def test_sigterm_shutdown_timeout_aborts_long_request(make_server, stream: bool) -> None:
    srv = make_server("--speedup-ratio", "1", "--shutdown-timeout", "0.5")
    async with aiohttp.ClientSession() as s:
        if stream:
            resp = await s.post(srv.url + CHAT, json=_chat(4000, stream=True))
            await resp.content.readline()
            pending = asyncio.create_task(resp.read())
        else:
            pending = asyncio.create_task(s.post(srv.url + CHAT, json=_chat(4000)))
            await asyncio.sleep(0.4)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(srv.proc.wait, 10)
        exited_after = time.monotonic() - t0
        done, _ = await asyncio.wait([pending], timeout=5)
        assert done, "the client was left hanging after the server exited"
        if not pending.exception():
            result = pending.result()
            if stream:
                assert b"[DONE]" not in result  # cut short, not reported as complete
            else:
                assert result.status >= 500  # never a 200 with a truncated completion
                result.release()
    assert rc == 0
    assert exited_after < 2.5, f"exit took {exited_after:.1f}s with --shutdown-timeout 0.5"
    assert "aborting 1 request" in srv.log()


# --- random disconnects ----------------------------------------------------------------------------
async def _one_random_client(s: aiohttp.ClientSession, url: str, rng: random.Random) -> str:
    """One request that hangs up at a random point (or, sometimes, reads to the end)."""
    stream = rng.random() < 0.6
    route = rng.choice(("chat", "chat", "completions", "messages"))
    max_tokens = rng.randint(2, 24)
    if route == "chat":
        path, body = CHAT, _chat(max_tokens, stream)
    elif route == "completions":
        path, body = "/v1/completions", {"model": MODEL, "prompt": "once upon a time " * rng.randint(1, 40),
                                         "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}
    else:
        path, body = "/v1/messages", {"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                                      "messages": [{"role": "user", "content": "hi " * rng.randint(1, 80)}]}
    mode = rng.choice(("events", "delay", "complete")) if stream else rng.choice(("delay", "complete"))
    try:
        async with asyncio.timeout(rng.uniform(0.0, 0.4) if mode == "delay" else 30):
            resp = await s.post(url + path, json=body)
            if mode == "events":
                for _ in range(rng.randint(0, 6)):
                    if not await resp.content.readline():
                        break
                resp.close()  # drops the connection mid-stream
                return "hung_up"
            await resp.read()
            assert resp.status == 200, (resp.status, body)
            resp.release()
            return "complete"
    except TimeoutError:
        return "hung_up"


async def test_random_disconnects_leak_nothing(make_server) -> None:
    srv = make_server("--speedup-ratio", "1")
    rng = random.Random(1234)
    total, concurrency = 1000, 64
    sem = asyncio.Semaphore(concurrency)
    outcomes: dict[str, int] = {}
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency * 2)) as s:
        async def run_one(seed: int) -> None:
            async with sem:
                out = await _one_random_client(s, srv.url, random.Random(seed))
                outcomes[out] = outcomes.get(out, 0) + 1

        await asyncio.gather(*(run_one(rng.random()) for _ in range(total)))
        elapsed = time.monotonic() - t0
        idle = await _wait_idle(s, srv.url)
        assert not any(idle.values()), f"leaked after disconnects: {idle}"
        async with s.post(srv.url + CHAT, json=_chat(4)) as r:
            assert r.status == 200
        async with s.get(srv.url + "/metrics") as r:
            disconnected = metric_value(await r.text(), "dynamo_frontend_disconnected_clients")
    print(f"\n{total} requests with random disconnects at concurrency {concurrency}: {elapsed:.1f}s {outcomes}")
    assert outcomes.get("hung_up", 0) > total // 4 and outcomes.get("complete", 0) > total // 10
    assert disconnected > total // 10, "hang-ups were not seen as disconnects"
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
    async with aiohttp.ClientSession() as s:
        streams = [await s.post(srv.url + CHAT, json=_chat(80, stream=True), headers=same) for _ in range(4)]
        for r in streams:
            await r.content.readline()  # all four are generating
        async with s.get(srv.url + "/health") as r:
            instances = (await r.json())["instances"]
        assert sum(i["load"]["active_requests"] for i in instances) == 4, instances
        assert all(i["load"]["active_requests"] == 2 for i in instances), "load-aware routing spreads them"
        for r in streams:
            events = _events((await r.read()).decode())
            assert events[-1] == "data: [DONE]" and '"error"' not in events[-2]
            assert r.headers["x-request-id"] == "shared-id"
        idle = await _wait_idle(s, srv.url)
    assert not any(idle.values()), idle


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
    srv = make_server("--speedup-ratio", "1", "--request-timeout", "0.5")
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.post(srv.url + CHAT, json=_chat(2000)) as r:
            assert r.status == 504
            err = _openai_error(await r.json())
            assert err["code"] == "request_timeout" and err["type"] == "timeout_error"
        assert time.monotonic() - t0 < 3.0
        async with s.post(srv.url + CHAT, json=_chat(2000, stream=True)) as r:
            assert r.status == 200
            events = _events(await r.text())
        assert events[-1] == "data: [DONE]"
        err = json.loads(events[-2][6:])["error"]
        assert err["code"] == "request_timeout"
        async with s.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2000,
                                                              "ignore_eos": True}) as r:
            assert r.status == 504
        async with s.post(srv.url + CHAT, json=_chat(3)) as r:  # short requests still succeed
            assert r.status == 200
        idle = await _wait_idle(s, srv.url)
        assert not any(idle.values()), idle
        async with s.get(srv.url + "/metrics") as r:
            text = await r.text()
    assert re.search(r'dynamo_frontend_requests_total\{[^}]*error_type="(http_504|request_timeout)"', text)


# --- instance health -------------------------------------------------------------------------------
def _crash(instance: int) -> dict:
    return _chat(2, nvext={"annotations": ["mocker.crash"], "backend_instance_id": instance})


async def _instance_states(s: aiohttp.ClientSession, url: str) -> dict[int, str]:
    async with s.get(url + "/health") as r:
        return {i["worker_id"]: i["state"] for i in (await r.json())["instances"]}


@pytest.mark.parametrize("router_mode", ["round-robin", "kv"])
async def test_crashed_instance_is_skipped_until_it_returns(make_server, router_mode: str) -> None:
    srv = make_server("--speedup-ratio", "0", "--num-instances", "2", "--router-mode", router_mode,
                      "--mocker-crash-duration", "2")
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + CHAT, json=_crash(0)) as r:
            assert r.status == 503 and r.headers["Retry-After"]  # the crashing request itself fails cleanly
        crashed_at = time.monotonic()
        assert await _instance_states(s, srv.url) == {0: "unavailable", 1: "ready"}
        async with s.get(srv.url + "/ready") as r:
            assert r.status == 200  # one healthy instance is enough to take traffic
        for i in range(8):
            async with s.post(srv.url + CHAT, json=_chat(4, stream=i % 2 == 1)) as r:
                text = await r.text()
                assert r.status == 200 and '"error"' not in text, text
        assert time.monotonic() - crashed_at < 2, "the traffic above must have run while instance 0 was down"
        deadline = time.monotonic() + 6
        while (await _instance_states(s, srv.url))[0] != "ready":
            assert time.monotonic() < deadline, "instance 0 never came back"
            await asyncio.sleep(0.05)
        async with s.post(srv.url + CHAT, json=_chat(2, nvext={"backend_instance_id": 0})) as r:
            assert r.status == 200


async def test_only_instance_crashed_means_not_ready(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--num-instances", "1", "--mocker-crash-duration", "2")
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + CHAT, json=_crash(0)) as r:
            assert r.status == 503
        crashed_at = time.monotonic()
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
        assert time.monotonic() - crashed_at < 2, "the checks above must have run inside the crash window"
        deadline = time.monotonic() + 6
        while True:
            async with s.get(srv.url + "/ready") as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "/ready never returned to 200 after the crash window"
            await asyncio.sleep(0.05)
        async with s.post(srv.url + CHAT, json=_chat(2)) as r:
            assert r.status == 200
