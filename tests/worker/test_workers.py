"""Server + mocker worker processes on loopback: serving, kill -9 with migration, rejoin, auth, start order."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import aiohttp
import pytest

from tests.worker.harness import (get_json, post_json, remote_instances, start_server, start_worker,
                                  wait_until)

pytestmark = pytest.mark.timeout(60)

MODEL = "tiny-chatml"
# ~6 ms per decode step: a 120-token stream lasts ~0.7 s, long enough to kill a worker mid-stream.
WORKER_ARGS = ["--speedup-ratio", "1"]


def _prompts(n: int) -> list[dict]:
    return [{"model": MODEL, "prompt": f"request number {i} about migration", "max_tokens": 120,
             "seed": 1000 + i, "ignore_eos": True} for i in range(n)]


async def _stream(http: aiohttp.ClientSession, url: str, body: dict, first: asyncio.Event) -> str:
    text = []
    async with http.post(url + "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            text.append(chunk["choices"][0]["text"])
            first.set()
    return "".join(text)


def test_two_workers_kill_one_mid_stream_then_rejoin():
    server = start_server(["--num-instances", "0", "--migration-limit", "2", "--router-mode", "round-robin"])
    workers = [start_worker(server.url, WORKER_ARGS, name=f"w{i}") for i in range(2)]
    try:
        wait_until(lambda: len(remote_instances(server.url)) == 2, 30, "two workers to join")
        bodies = _prompts(8)
        reference = []
        for b in bodies:  # fault-free run
            status, resp = post_json(server.url + "/v1/completions", b)
            assert status == 200, resp
            reference.append(resp["choices"][0]["text"])

        async def faulty_run() -> tuple[list[str], float, set[int]]:
            async with aiohttp.ClientSession() as http:
                firsts = [asyncio.Event() for _ in bodies]
                tasks = [asyncio.create_task(_stream(http, server.url, b, f)) for b, f in zip(bodies, firsts)]
                await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 20)
                async with http.get(server.url + "/health") as r:
                    busy = {i["worker_id"] for i in (await r.json())["instances"] if i["load"]["active_requests"]}
                workers[0].proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                texts = await asyncio.wait_for(asyncio.gather(*tasks), 30)
                return texts, killed_at, busy

        texts, killed_at, busy = asyncio.run(faulty_run())
        assert len(busy) == 2, "both workers should be serving streams before the kill"
        assert texts == reference  # no lost or repeated tokens
        wait_until(lambda: len(remote_instances(server.url)) == 1, max(0.1, killed_at + 2.0 - time.monotonic()),
                   "the killed worker to leave /health")
        assert "migrating" in server.log()

        workers[0] = start_worker(server.url, WORKER_ARGS, name="w0-restarted")
        wait_until(lambda: len(remote_instances(server.url)) == 2, 30, "the restarted worker to rejoin")
        status, resp = post_json(server.url + "/v1/completions", bodies[0])
        assert status == 200 and resp["choices"][0]["text"] == reference[0]
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)
        server.stop()


def test_unauthenticated_worker_is_refused_and_model_follows_workers():
    server = start_server(["--num-instances", "0"])
    try:
        # No worker yet: not ready, no model listed, requests get 503.
        assert get_json(server.url + "/ready")[0] == 503
        assert get_json(server.url + "/v1/models")[1]["data"] == []
        status, _ = post_json(server.url + "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 2})
        assert status == 503
        intruder = start_worker(server.url, ["--speedup-ratio", "0"], token="not-the-token", name="intruder")
        assert intruder.proc.wait(30) == 2
        assert "invalid worker token" in intruder.log()
        assert remote_instances(server.url) == []
        # A worker announcing a model the server does not serve brings it (Dynamo's discovery): listed while
        # the worker is there, gone when it leaves; it never makes the configured model ready.
        other = start_worker(server.url, ["--speedup-ratio", "0", "--served-model-name", "other"], name="other")
        try:
            wait_until(lambda: [m["id"] for m in get_json(server.url + "/v1/models")[1]["data"]] == ["other"], 30,
                       "the announced model listed")
            status, body = post_json(server.url + "/v1/completions", {"model": "other", "prompt": "hi",
                                                                      "max_tokens": 2})
            assert status == 200 and body["model"] == "other", body
            assert get_json(server.url + "/ready")[0] == 503
        finally:
            other.stop()
        wait_until(lambda: get_json(server.url + "/v1/models")[1]["data"] == [], 30, "the announced model gone")
        status, _ = post_json(server.url + "/v1/completions", {"model": "other", "prompt": "hi", "max_tokens": 2})
        assert status == 404
        good = start_worker(server.url, ["--speedup-ratio", "0"], name="good")
        try:
            wait_until(lambda: get_json(server.url + "/ready")[0] == 200, 30, "/ready after a worker joined")
            assert [m["id"] for m in get_json(server.url + "/v1/models")[1]["data"]] == [MODEL]
        finally:
            good.stop()
    finally:
        server.stop()


def test_worker_started_before_the_server_joins_when_it_comes_up():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    worker = start_worker(url, ["--speedup-ratio", "0"], name="early")
    try:
        wait_until(lambda: "not reachable" in worker.log(), 20, "the worker to retry")
        assert worker.proc.poll() is None
        server = start_server(["--num-instances", "0", "--port", str(port)])
        try:
            wait_until(lambda: len(remote_instances(server.url)) == 1, 10, "the early worker to join")
            status, resp = post_json(server.url + "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4})
            assert status == 200 and resp["usage"]["completion_tokens"] == 4
        finally:
            server.stop()
    finally:
        worker.stop()
