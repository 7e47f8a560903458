"""Server + mocker worker processes on loopback: serving, kill -9 with migration, rejoin, auth, start order."""

from __future__ import annotations

import asyncio
import json
import signal
import socket

import aiohttp
import pytest

from tests.worker.harness import (get_json, post_json, remote_instances, start_server, start_worker,
                                  wait_until)

pytestmark = pytest.mark.timeout(60)

MODEL = "tiny-chatml"
# 80 ms a decode step: a 300-token stream lasts ~24 s on the slow worker, so its streams are still running
# when the test kills it right after their first tokens, however slow the machine; everything else is fast.
SLOW = ["--speedup-ratio", "0.1"]
FAST = ["--speedup-ratio", "0"]


def _prompts(n: int) -> list[dict]:
    return [{"model": MODEL, "prompt": f"request number {i} about migration", "max_tokens": 300,
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
    reference_server = start_server(["--num-instances", "1", *FAST], token=None)
    server = start_server(["--num-instances", "0", "--migration-limit", "2", "--router-mode", "round-robin"])
    workers = [start_worker(server.url, SLOW, name="w0-slow")]
    try:
        wait_until(lambda: len(remote_instances(server.url)) == 1, 30, "the slow worker to join")
        slow = remote_instances(server.url)[0]["worker_id"]
        workers.append(start_worker(server.url, FAST, name="w1"))
        wait_until(lambda: len(remote_instances(server.url)) == 2, 30, "two workers to join")
        bodies = _prompts(8)
        reference = []
        for b in bodies:  # fault-free run (the mocker's tokens depend on the seed and prompt, not the instance)
            status, resp = post_json(reference_server.url + "/v1/completions", b)
            assert status == 200, resp
            reference.append(resp["choices"][0]["text"])

        async def faulty_run() -> tuple[list[str], dict[int, int]]:
            async with aiohttp.ClientSession() as http:
                firsts = [asyncio.Event() for _ in bodies]
                tasks = [asyncio.create_task(_stream(http, server.url, b, f)) for b, f in zip(bodies, firsts)]
                await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 30)
                async with http.get(server.url + "/health") as r:
                    active = {i["worker_id"]: i["load"].get("active_requests", 0)
                              for i in (await r.json())["instances"]}
                workers[0].proc.send_signal(signal.SIGKILL)
                texts = await asyncio.wait_for(asyncio.gather(*tasks), 30)
                return texts, active

        texts, active = asyncio.run(faulty_run())
        assert active[slow] == 4, active  # round-robin gave it half the streams; all were mid-stream at the kill
        assert texts == reference  # no lost or repeated tokens
        wait_until(lambda: len(remote_instances(server.url)) == 1, 30, "the killed worker to leave /health")
        assert "migrating" in server.log()

        workers[0] = start_worker(server.url, FAST, name="w0-restarted")
        wait_until(lambda: len(remote_instances(server.url)) == 2, 30, "the restarted worker to rejoin")
        status, resp = post_json(server.url + "/v1/completions", bodies[0])
        assert status == 200 and resp["choices"][0]["text"] == reference[0]
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)
        server.stop()
        reference_server.stop()


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
            wait_until(lambda: len(remote_instances(server.url)) == 1, 30, "the early worker to join")
            status, resp = post_json(server.url + "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 4})
            assert status == 200 and resp["usage"]["completion_tokens"] == 4
        finally:
            server.stop()
    finally:
        worker.stop()


def test_worker_announced_reasoning_parser_is_used():
    """The server adopts the parsers a worker announces in its model card: a `--num-instances 0` server
    behind a worker started with --reasoning-parser deepseek_r1 splits out reasoning_content (the embedded
    model's own default, qwen3, would leave the deepseek_r1-format text, which has no <think>, as content)."""
    server = start_server(["--num-instances", "0"])
    worker = start_worker(server.url, ["--speedup-ratio", "0", "--mocker-output", "reasoning",
                                       "--reasoning-parser", "deepseek_r1"], name="r1")
    try:
        wait_until(lambda: len(remote_instances(server.url)) == 1, 30, "the worker to join")
        body = {"model": MODEL, "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
                "max_tokens": 400, "seed": 3}
        status, resp = post_json(server.url + "/v1/chat/completions", body)
        assert status == 200, resp
        msg = resp["choices"][0]["message"]
        assert msg.get("reasoning_content"), msg
        assert msg["content"] and "</think>" not in msg["content"], msg
    finally:
        worker.stop(signal.SIGKILL)
        server.stop()
