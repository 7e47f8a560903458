"""Migration: a request whose instance fails mid-stream continues on another with the same tokens."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import openai
import pytest

from tests.worker.harness import remote_instances, start_server, start_worker, wait_until

pytestmark = pytest.mark.timeout(90)

MSG = [{"role": "user", "content": "Tell me about migrating birds."}]


def _text(url: str, stream: bool, **extra) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    kw = dict(model="tiny-chatml", messages=MSG, max_tokens=40, seed=11, extra_body={"ignore_eos": True}, **extra)
    if not stream:
        return client.chat.completions.create(**kw).choices[0].message.content
    return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                   if c.choices)


@pytest.mark.parametrize("stream", [True, False])
def test_failed_instance_migrates_with_identical_text(make_server, stream: bool) -> None:
    reference = make_server("--speedup-ratio", "0")
    expected = _text(reference.url, stream)
    faulty = make_server("--speedup-ratio", "0", "--num-instances", "2", "--router-mode", "round-robin",
                         "--migration-limit", "3", "--mocker-fail-after", "7", "--mocker-fault-instances", "0")
    for _ in range(4):  # round-robin: at least two of these start on the faulty instance 0
        assert _text(faulty.url, stream) == expected
    assert "migrating" in faulty.log()


async def test_limit_zero_gives_clean_error(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--num-instances", "1", "--mocker-fail-after", "5")
    body = {"model": "tiny-chatml", "messages": MSG, "max_tokens": 30, "ignore_eos": True}
    async with aiohttp.ClientSession() as s:
        async with s.post(srv.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 503
            err = (await r.json())["error"]
            assert "failed" in err["message"] and "Traceback" not in err["message"]
        async with s.post(srv.url + "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status == 200
            events = [l for l in (await r.text()).split("\n\n") if l]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2] and "failed" in events[-2]


# --- migration between instances of different data-parallel sizes -----------------------------------
LONG_TOKENS = 4000  # ~32 s of decode at --speedup-ratio 1: still running on worker A when the test kills A


def _chat_body(content: str, max_tokens: int, **nvext) -> dict:
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "seed": 11, "ignore_eos": True, "stream": True}
    if nvext:
        body["nvext"] = nvext
    return body


async def _read_content(resp: aiohttp.ClientResponse, until_first: bool = False) -> tuple[str, list[dict]]:
    """The streamed content so far (up to the first content chunk, or to the end), and any error chunks."""
    text, errors = [], []
    async for line in resp.content:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            errors.append(chunk["error"])
            continue
        delta = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
        if delta:
            text.append(delta)
            if until_first:
                break
    return "".join(text), errors


def test_migration_is_not_pinned_to_the_dead_instances_dp_rank(make_server) -> None:
    """Worker A has two dp ranks, worker B one. A request running on A's dp rank 1 when A dies must
    continue on B (rank 0) with no lost or repeated tokens: the rank the router chose on A is not a pin."""
    reference = make_server("--speedup-ratio", "0")
    story = "Tell me about migrating birds."

    async def expected() -> str:
        async with aiohttp.ClientSession() as s:
            async with s.post(reference.url + "/v1/chat/completions", json=_chat_body(story, LONG_TOKENS)) as r:
                text, errors = await _read_content(r)
        assert not errors
        return text

    want = asyncio.run(expected())
    server = start_server(["--num-instances", "0", "--migration-limit", "1", "--router-mode", "kv"])
    workers = []
    try:
        workers.append(start_worker(server.url, ["--speedup-ratio", "1", "--data-parallel-size", "2"], name="a-dp2"))
        wait_until(lambda: len(remote_instances(server.url)) == 2, 30, "worker A (2 dp ranks) to join")
        a = remote_instances(server.url)[0]["worker_id"]
        workers.append(start_worker(server.url, ["--speedup-ratio", "0"], name="b-dp1"))
        wait_until(lambda: len(remote_instances(server.url)) == 3, 30, "worker B (1 dp rank) to join")

        async def scenario() -> tuple[str, list[dict]]:
            async with aiohttp.ClientSession() as s:
                url = server.url + "/v1/chat/completions"
                # A request held on A's rank 0 makes the router put the next request for A on its rank 1.
                blocker = await s.post(url, json=_chat_body("hold rank zero " * 20, LONG_TOKENS,
                                                            backend_instance_id=a, dp_rank=0))
                assert blocker.status == 200, await blocker.text()
                await _read_content(blocker, until_first=True)
                resp = await s.post(url, json=_chat_body(story, LONG_TOKENS, backend_instance_id=a))
                assert resp.status == 200, await resp.text()
                head, errors = await _read_content(resp, until_first=True)
                async with s.get(server.url + "/health") as r:
                    load = {(i["worker_id"], i["dp_rank"]): i["load"].get("active_requests")
                            for i in (await r.json())["instances"]}
                assert load[(a, 0)] == 1 and load[(a, 1)] == 1, load  # the request runs on A's dp rank 1
                workers[0].proc.send_signal(signal.SIGKILL)  # A dies mid-stream
                tail, more = await _read_content(resp)
                blocker.close()
                return head + tail, errors + more

        text, errors = asyncio.run(scenario())
        assert not errors, errors  # e.g. a 400 "no instance has dp_rank 1" when the retry keeps A's rank
        assert text == want  # no lost or repeated tokens
        assert "migrating" in server.log()
    finally:
        for w in workers:
            w.stop(signal.SIGKILL)
        server.stop()
