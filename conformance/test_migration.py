"""Migration: a request whose instance fails mid-stream continues on another with the same tokens."""

from __future__ import annotations

import aiohttp
import openai
import pytest

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
