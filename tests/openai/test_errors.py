"""OpenAI routes' errors in-process: 4xx envelopes, 503 before a stream starts, errors inside a stream."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from dynamo_mono.engine import EngineError
from tests.openai.conftest import (MODEL, MakeServer, Server, assert_envelope, chat, completion, parse_sse,
                                   per_choice, reply)

pytestmark = pytest.mark.timeout(10)
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MSG = [{"role": "user", "content": "x"}]


async def raw_post(server: Server, path: str, data: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    r = await server.client.post(path, data=data, headers={"Content-Type": content_type})
    return r.status, await r.json(content_type=None)


# --- 400: bad requests, each naming what is wrong --------------------------------------------------
BAD_CHAT = [
    ({"messages": MSG}, "model", "model"),
    ({"model": MODEL, "messages": []}, "messages", "messages"),
    ({"model": MODEL, "messages": "hello"}, "messages", "messages"),
    ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, "role", "messages.0.role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "content", "messages.0.content"),
    ({"model": MODEL, "messages": MSG, "max_tokens": 0}, "max_tokens", "max_tokens"),
    ({"model": MODEL, "messages": MSG, "max_tokens": -3}, "max_tokens", "max_tokens"),
    ({"model": MODEL, "messages": MSG, "max_tokens": "ten"}, "max_tokens", "max_tokens"),
    ({"model": MODEL, "messages": MSG, "temperature": 2.1}, "temperature", "temperature"),
    ({"model": MODEL, "messages": MSG, "temperature": -0.1}, "temperature", "temperature"),
    ({"model": MODEL, "messages": MSG, "n": 0}, "n", "n"),
    ({"model": MODEL, "messages": MSG, "n": 1000}, "n=1000", "n"),
    ({"model": MODEL, "messages": MSG, "logprobs": True, "top_logprobs": 50}, "top_logprobs", "top_logprobs"),
    ({"model": MODEL, "messages": MSG, "top_logprobs": 2}, "logprobs", None),
    ({"model": MODEL, "messages": MSG, "frobnicate": True}, "frobnicate", "frobnicate"),
    ({"model": MODEL, "messages": MSG, "nvext": {"frobnicate": 1}}, "frobnicate", "nvext.frobnicate"),
    ({"model": MODEL, "messages": MSG, "stream": "yes"}, "stream", "stream"),
    ({"model": MODEL, "messages": MSG, "stream_options": {"include_usage": "yes"}}, "include_usage",
     "stream_options.include_usage"),
    ({"model": MODEL, "messages": MSG, "tool_choice": "required"}, "tool", "tool_choice"),
    ({"model": MODEL, "messages": MSG, "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}}, "'g'", "tool_choice"),
    ({"model": MODEL, "messages": MSG, "stop": [""]}, "stop", "stop"),
    ({"model": MODEL, "messages": MSG, "stop": [str(i) for i in range(17)]}, "stop", "stop"),
    ({"model": MODEL, "messages": MSG, "min_tokens": 5, "max_tokens": 2}, "min_tokens", "min_tokens"),
    ({"model": MODEL, "messages": MSG, "chat_template": "{{ messages }}"}, "chat_template", "chat_template"),
    ({"model": MODEL, "messages": MSG, "max_tokens": 10_000_000}, "10000000", "max_tokens"),
]


@pytest.mark.parametrize("payload,needle,param", BAD_CHAT)
async def test_chat_bad_requests(server: Server, payload: dict, needle: str, param: str | None) -> None:
    status, body = await raw_post(server, CHAT, orjson.dumps(payload))
    assert status == 400, body
    err = assert_envelope(body, 400)
    assert needle.lower() in err["message"].lower(), err
    if param is not None:
        assert err["param"] == param
    assert server.engine.requests == []  # nothing reached the engine


BAD_COMPLETIONS = [
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": [-1, 2]}, "prompt"),
    ({"model": MODEL, "prompt": [99999999]}, "out of range"),
    ({"model": MODEL, "prompt": [[]]}, "empty"),
    ({"model": MODEL, "prompt": []}, "prompt"),
    ({"model": MODEL, "prompt": [1.5]}, "prompt"),
    ({"model": MODEL, "prompt": ""}, "empty"),
    ({"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
    ({"model": MODEL, "prompt": "x", "logprobs": 50}, "logprobs"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 9000}, "9000"),
    ({"model": MODEL, "prompt": "word " * 9000, "max_tokens": 10}, "maximum context length"),
]


@pytest.mark.parametrize("payload,needle", BAD_COMPLETIONS)
async def test_completions_bad_requests(server: Server, payload: dict, needle: str) -> None:
    status, body = await raw_post(server, COMPLETIONS, orjson.dumps(payload))
    assert status == 400, body
    assert needle.lower() in assert_envelope(body, 400)["message"].lower()
    assert server.engine.requests == []


@pytest.mark.parametrize("data,needle", [(b"{not json", "malformed json"), (b"[1, 2]", "json object"),
                                         (b"", "empty"), (b"null", "json object")])
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_malformed_bodies(server: Server, path: str, data: bytes, needle: str) -> None:
    status, body = await raw_post(server, path, data)
    assert status == 400
    assert needle in assert_envelope(body, 400)["message"].lower()


async def test_context_overflow_names_both_numbers(server: Server) -> None:
    status, body = await server.post(COMPLETIONS, completion("hi", max_tokens=9000))
    msg = assert_envelope(body, status)["message"]
    assert status == 400 and "9000" in msg and "8192" in msg
    assert body["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_unknown_model_is_404(server: Server, path: str) -> None:
    payload = chat(model="nope") if path == CHAT else completion(model="nope")
    status, body = await server.post(path, payload)
    assert status == 404
    err = assert_envelope(body, 404)
    assert err["code"] == "model_not_found" and err["param"] == "model" and "nope" in err["message"]


async def test_models_routes(server: Server) -> None:
    r = await server.client.get("/v1/models")
    data = (await r.json())["data"]
    assert [m["id"] for m in data] == [MODEL] and data[0]["object"] == "model"
    r = await server.client.get(f"/v1/models/{MODEL}")
    assert r.status == 200 and (await r.json())["id"] == MODEL
    r = await server.client.get("/v1/models/nope")
    assert r.status == 404 and assert_envelope(await r.json(), 404)["code"] == "model_not_found"


async def test_unknown_route_and_method(server: Server) -> None:
    r = await server.client.get("/v1/nothing-here")
    assert r.status == 404 and "/v1/nothing-here" in assert_envelope(await r.json(), 404)["message"]
    r = await server.client.get(CHAT)
    assert r.status == 405 and "POST" in r.headers.get("Allow", "")
    assert_envelope(await r.json(), 405)


async def test_wrong_content_type_is_415(server: Server) -> None:
    status, body = await raw_post(server, CHAT, b"model=x", content_type="text/plain")
    assert status == 415 and "text/plain" in assert_envelope(body, 415)["message"]


async def test_oversized_body_is_413(make_server: MakeServer) -> None:
    server = await make_server(max_body_size=2048)
    status, body = await raw_post(server, CHAT, orjson.dumps(chat("x" * 5000)))
    assert status == 413
    assert "2048" in assert_envelope(body, 413)["message"]
    status, _ = await server.post(CHAT, chat("small"))
    assert status == 200


# --- refusals before the response starts: a status, also for stream=true ---------------------------------
@pytest.mark.parametrize("stream", [False, True])
async def test_no_ready_instance_is_503_before_streaming(server: Server, stream: bool) -> None:
    server.engine.up = False
    r = await server.client.post(CHAT, json=chat(stream=stream))
    assert r.status == 503 and r.headers.get("Retry-After")
    assert assert_envelope(await r.json(), 503)["code"] == "no_instance"
    assert server.engine.requests == []


# --- errors after the stream started: an error event, then [DONE] -----------------------------------------
def split_error(events: list[Any]) -> tuple[list[dict], dict]:
    *chunks, err, done = events
    assert done == "[DONE]" and set(err) == {"error"}, events[-3:]
    assert all("error" not in c for c in chunks)
    return chunks, err


@pytest.mark.parametrize("failure", ["finish_error", "raise"])
@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_engine_failure_mid_stream_is_an_error_event(server: Server, path: str, failure: str) -> None:
    if failure == "finish_error":
        server.script(reply("Hello there, how are you?", error_after=2))
    else:
        server.script(reply("Hello", then=EngineError("worker 3 died")))
    payload = chat() if path == CHAT else completion()
    chunks, err = split_error(await server.stream(path, payload))
    e = assert_envelope(err, 503)
    assert e["code"] == "engine_error" and e["type"] == "service_unavailable"
    assert "simulated engine failure" in e["message"] or "worker 3 died" in e["message"]
    assert chunks, "tokens before the failure were streamed"
    assert all(ch["finish_reason"] is None for c in chunks for ch in c["choices"])


async def test_one_failing_choice_ends_the_whole_stream_with_an_error(server: Server) -> None:
    server.script(per_choice(reply("fine and long " * 5), reply("Hello", then=EngineError("boom"))))
    chunks, err = split_error(await server.stream(CHAT, chat(n=2)))
    assert "boom" in err["error"]["message"]


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_engine_failure_in_a_unary_request_is_503(server: Server, path: str) -> None:
    server.script(reply("Hello", then=EngineError("worker 3 died")))
    payload = chat() if path == CHAT else completion()
    r = await server.client.post(path, json=payload)
    assert r.status == 503 and r.headers.get("Retry-After") == "1"
    assert "worker 3 died" in assert_envelope(await r.json(), 503)["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_request_timeout(make_server: MakeServer, stream: bool) -> None:
    # the engine never finishes, so the outcome does not depend on speed; the timeout only bounds the test
    server = await make_server(request_timeout=0.05)
    server.script(reply("Hello there", hold=asyncio.Event()))
    r = await server.client.post(CHAT, json=chat(stream=stream))
    if not stream:
        assert r.status == 504 and assert_envelope(await r.json(), 504)["code"] == "request_timeout"
        return
    assert r.status == 200
    _, err = split_error(parse_sse(await r.text()))
    assert err["error"]["code"] == "request_timeout"
