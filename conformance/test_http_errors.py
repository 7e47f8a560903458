"""The error table through raw HTTP: every client mistake is a 4xx in OpenAI's envelope, never a 5xx."""

from __future__ import annotations

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(60)


async def _post(url: str, data: bytes | str, content_type: str = "application/json") -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=data, headers={"Content-Type": content_type}) as r:
            return r.status, await r.json(content_type=None)


def _assert_envelope(body: dict) -> dict:
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert "Traceback" not in err["message"] and "pydantic" not in err["message"].lower()
    assert "/site-packages/" not in err["message"]
    return err


@pytest.mark.parametrize("payload,needle", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (b"", "empty"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "M", "messages": []}', "messages"),
    (b'{"model": "M", "messages": "hello"}', "messages"),
    (b'{"model": "M", "messages": [{"role": "robot", "content": "x"}]}', "role"),
    (b'{"model": "M", "messages": [{"role": "user", "content": 5}]}', "content"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}', "max_tokens"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "temperature": 2.1}', "temperature"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "temperature": -0.1}', "temperature"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "n": 1000}', "n"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 50, "logprobs": true}',
     "top_logprobs"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "frobnicate": true}', "frobnicate"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}', "tool"),
    (b'{"model": "M", "messages": [{"role": "user", "content": "x"}], "stop": ["a","b","c","d","e","f","g",'
     b'"h","i","j","k","l","m","n","o","p","q"]}', "stop"),
])
async def test_chat_bad_requests(base_url: str, model_name: str, payload: bytes, needle: str) -> None:
    status, body = await _post(base_url + "/v1/chat/completions", payload.replace(b'"M"', f'"{model_name}"'.encode()))
    assert status == 400, body
    err = _assert_envelope(body)
    assert needle.lower() in err["message"].lower()
    assert err["type"] == "invalid_request_error"


async def test_context_overflow_names_both_numbers(base_url: str, model_name: str) -> None:
    long_prompt = "word " * 9000
    status, body = await _post(base_url + "/v1/completions",
                               f'{{"model": "{model_name}", "prompt": "{long_prompt}", "max_tokens": 10}}')
    assert status == 400
    msg = _assert_envelope(body)["message"]
    assert "maximum context length" in msg and any(ch.isdigit() for ch in msg)
    status, body = await _post(base_url + "/v1/completions",
                               f'{{"model": "{model_name}", "prompt": "hi", "max_tokens": 9000}}')
    assert status == 400 and "9000" in body["error"]["message"] and "8192" in body["error"]["message"]


async def test_unknown_model_404(base_url: str) -> None:
    status, body = await _post(base_url + "/v1/chat/completions",
                               b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}')
    assert status == 404 and _assert_envelope(body)["code"] == "model_not_found"


async def test_unknown_route_and_method(base_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base_url + "/v1/nothing-here") as r:
            assert r.status == 404
            _assert_envelope(await r.json())
        async with s.get(base_url + "/v1/chat/completions") as r:
            assert r.status == 405
            _assert_envelope(await r.json())
        async with s.get(base_url + "/v1/models/nope") as r:
            assert r.status == 404


async def test_wrong_content_type_415(base_url: str, model_name: str) -> None:
    status, body = await _post(base_url + "/v1/chat/completions", "model=x", content_type="text/plain")
    assert status == 415
    _assert_envelope(body)


async def test_oversized_body_413(make_server) -> None:
    srv = make_server("--max-body-size", "2048")
    status, body = await _post(srv.url + "/v1/chat/completions",
                               b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}')
    assert status == 413
    _assert_envelope(body)


async def test_bad_token_ids(base_url: str, model_name: str) -> None:
    for prompt in ("[-1, 2]", "[99999999]", "[[]]", "[]", "[1.5]"):
        status, body = await _post(base_url + "/v1/completions",
                                   f'{{"model": "{model_name}", "prompt": {prompt}, "max_tokens": 2}}')
        assert status == 400, (prompt, body)
        _assert_envelope(body)
