"""POST /v1/chat/completions in-process: unary and stream shapes, n, stop strings, logprobs, reasoning and tools."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.openai.conftest import MODEL, WEATHER_CALL, WEATHER_TOOL, MakeServer, Server, chat, per_choice, reply

pytestmark = pytest.mark.timeout(10)
PATH = "/v1/chat/completions"


async def unary(server: Server, payload: dict) -> dict:
    status, body = await server.post(PATH, payload)
    assert status == 200, body
    ChatCompletion.model_validate(body)
    return body


async def stream(server: Server, payload: dict) -> list[Any]:
    events = await server.stream(PATH, payload)
    chunks = events[:-1]
    head = {k: chunks[0][k] for k in ("id", "created", "model")}
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert c["object"] == "chat.completion.chunk" and {k: c[k] for k in head} == head
    return chunks


def per_index(chunks: list[dict]) -> dict[int, list[dict]]:
    """Each choice's chunks (choice objects), in order; checks the role-first and finish-last rules."""
    out: dict[int, list[dict]] = {}
    for c in chunks:
        assert len(c["choices"]) <= 1
        for ch in c["choices"]:
            out.setdefault(ch["index"], []).append(ch)
    for i, chs in out.items():
        assert chs[0]["delta"].get("role") == "assistant", f"choice {i}: the first delta carries the role"
        assert all("role" not in ch["delta"] for ch in chs[1:])
        assert [ch["finish_reason"] is not None for ch in chs] == [False] * (len(chs) - 1) + [True]
        assert chs[-1]["delta"] == {}, "the finish chunk's delta is empty"
    return out


def text_of(chs: list[dict], key: str = "content") -> str:
    return "".join(ch["delta"].get(key) or "" for ch in chs)


# --- unary -------------------------------------------------------------------------------------------
async def test_unary_shape_and_usage(server: Server) -> None:
    server.script(reply("Hello there.", cached=16))
    body = await unary(server, chat())
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == MODEL
    assert isinstance(body["created"], int)
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                                "logprobs": None, "finish_reason": "stop", "stop_reason": None}]
    prompt = len(server.engine.requests[0].token_ids)
    completion = len(server.engine.tokenizer.encode("Hello there."))
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": 16}}


async def test_request_id_header_is_used_and_echoed(server: Server) -> None:
    r = await server.client.post(PATH, json=chat(), headers={"x-request-id": "my-req-1"})
    assert r.status == 200 and r.headers["x-request-id"] == "my-req-1"
    assert (await r.json())["id"] == "chatcmpl-my-req-1"


async def test_max_tokens_ends_with_length(server: Server) -> None:
    body = await unary(server, chat(max_tokens=2))
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 2
    assert server.engine.requests[0].stop.max_tokens == 2


async def test_max_completion_tokens_is_the_limit_too(server: Server) -> None:
    await unary(server, chat(max_tokens=None, max_completion_tokens=3))
    assert server.engine.requests[0].stop.max_tokens == 3


async def test_empty_reply(server: Server) -> None:
    server.script(reply(""))
    body = await unary(server, chat())
    assert body["choices"][0]["message"] == {"role": "assistant", "content": ""}
    assert body["usage"]["completion_tokens"] == 0
    chunks = await stream(server, chat())
    (chs,) = per_index(chunks).values()
    assert [ch["delta"] for ch in chs] == [{"role": "assistant", "content": ""}, {}]
    assert chs[-1]["finish_reason"] == "stop"


# --- streaming ---------------------------------------------------------------------------------------
async def test_stream_chunks_and_usage_chunk(server: Server) -> None:
    server.script(reply("Hello there.", cached=16))
    events = await server.stream(PATH, chat(stream_options={"include_usage": True}))
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    for c in events[:-1]:
        ChatCompletionChunk.model_validate(c)
    (chs,) = per_index(chunks).values()
    assert "usage" not in chunks[0] and all("usage" not in c for c in chunks)
    assert text_of(chs) == "Hello there."
    assert chs[-1] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert usage_chunk["choices"] == [] and usage_chunk["id"] == chunks[0]["id"]
    unary_body = await unary(server, chat())
    assert usage_chunk["usage"] == unary_body["usage"]


async def test_stream_without_include_usage_has_no_usage(server: Server) -> None:
    chunks = await stream(server, chat())
    assert all("usage" not in c and c["choices"] for c in chunks)
    chunks = await stream(server, chat(stream_options={"include_usage": False}))
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize("per_output", [1, 3])
async def test_stream_text_and_finish_match_unary(server: Server, per_output: int) -> None:
    server.script(reply("The quick brown fox jumps over the lazy dog.", per_output=per_output))
    u = (await unary(server, chat()))["choices"][0]
    (chs,) = per_index(await stream(server, chat())).values()
    assert text_of(chs) == u["message"]["content"] == "The quick brown fox jumps over the lazy dog."
    assert chs[-1]["finish_reason"] == u["finish_reason"] == "stop"


async def test_n_choices(server: Server) -> None:
    server.script(per_choice(reply("zero"), reply("one one", finish="length"), reply("two two two")))
    body = await unary(server, chat(n=3))
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == ["zero", "one one", "two two two"]
    assert [c["finish_reason"] for c in body["choices"]] == ["stop", "length", "stop"]
    tok = server.engine.tokenizer
    assert body["usage"]["completion_tokens"] == sum(len(tok.encode(t)) for t in ("zero", "one one", "two two two"))
    assert body["usage"]["prompt_tokens"] == len(server.engine.requests[0].token_ids)  # the prompt counts once
    assert sorted(r.choice_index for r in server.engine.requests) == [0, 1, 2]
    chunks = await stream(server, chat(n=3, stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == body["usage"]
    by_index = per_index(chunks[:-1])
    assert sorted(by_index) == [0, 1, 2]
    assert [text_of(by_index[i]) for i in range(3)] == ["zero", "one one", "two two two"]
    assert [by_index[i][-1]["finish_reason"] for i in range(3)] == ["stop", "length", "stop"]


# --- stop strings -------------------------------------------------------------------------------------
async def test_stop_string(server: Server) -> None:
    server.script(reply("one two STOP three four"))
    body = await unary(server, chat(stop="STOP"))
    c = body["choices"][0]
    assert c["message"]["content"] == "one two " and c["finish_reason"] == "stop" and c["stop_reason"] == "STOP"
    (chs,) = per_index(await stream(server, chat(stop=["nothing", "STOP"]))).values()
    assert text_of(chs) == "one two " and chs[-1]["finish_reason"] == "stop"
    body = await unary(server, chat(stop=["STOP"], include_stop_str_in_output=True))
    assert body["choices"][0]["message"]["content"] == "one two STOP"


async def test_stop_string_overrides_length(server: Server) -> None:
    server.script(reply("one two STOP three four"))
    tok = server.engine.tokenizer
    limit = len(tok.encode("one two STOP"))
    body = await unary(server, chat(stop="STOP", max_tokens=limit))
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"]["content"] == "one two "


async def test_stop_token_reason(server: Server) -> None:
    server.script(reply("done", stop_token_id=7))
    body = await unary(server, chat(stop_token_ids=[7]))
    assert body["choices"][0]["stop_reason"] == 7 and body["choices"][0]["finish_reason"] == "stop"
    assert server.engine.requests[0].stop.stop_token_ids == [7]


# --- logprobs -----------------------------------------------------------------------------------------
async def test_logprobs(server: Server) -> None:
    server.script(reply("Hello there."))
    body = await unary(server, chat(logprobs=True, top_logprobs=2))
    items = body["choices"][0]["logprobs"]["content"]
    tok = server.engine.tokenizer
    ids = tok.encode("Hello there.")
    assert [i["token"] for i in items] == [tok.decode([t]) for t in ids]
    assert len(items) == body["usage"]["completion_tokens"]
    for item in items:
        assert item["logprob"] == -0.5 and item["bytes"] == list(item["token"].encode())
        assert len(item["top_logprobs"]) == 2 and item["top_logprobs"][0]["token"] == item["token"]
        assert all(set(t) == {"token", "logprob", "bytes"} for t in item["top_logprobs"])
    (chs,) = per_index(await stream(server, chat(logprobs=True, top_logprobs=2))).values()
    streamed = [i for ch in chs if ch["logprobs"] for i in ch["logprobs"]["content"]]
    assert streamed == items


async def test_no_logprobs_unless_asked(server: Server) -> None:
    body = await unary(server, chat())
    assert body["choices"][0]["logprobs"] is None
    assert server.engine.requests[0].sampling.logprobs is None
    await unary(server, chat(logprobs=True))
    assert server.engine.requests[1].sampling.logprobs == 0


# --- reasoning and tool calls through the parsers -----------------------------------------------------
async def test_reasoning_and_tool_call_unary(server: Server) -> None:
    server.script(reply("<think>I need the weather.</think>Let me check." + WEATHER_CALL))
    body = await unary(server, chat("Weather in Paris?", tools=[WEATHER_TOOL]))
    c = body["choices"][0]
    msg = c["message"]
    assert msg["reasoning_content"] == "I need the weather." and msg["content"] == "Let me check."
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 2}
    assert c["finish_reason"] == "tool_calls"
    assert server.engine.requests[0].tools == [WEATHER_TOOL]


async def test_reasoning_and_tool_call_stream(server: Server) -> None:
    server.script(reply("<think>I need the weather.</think>Let me check." + WEATHER_CALL))
    (chs,) = per_index(await stream(server, chat("Weather in Paris?", tools=[WEATHER_TOOL]))).values()
    assert text_of(chs, "reasoning_content") == "I need the weather."
    assert text_of(chs) == "Let me check."
    calls = [tc for ch in chs for tc in ch["delta"].get("tool_calls", [])]
    first, *rest = calls
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_weather"
    assert all(set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"} for tc in rest)
    args = "".join(tc["function"]["arguments"] for tc in calls)
    assert json.loads(args) == {"city": "Paris", "days": 2}
    assert chs[-1]["finish_reason"] == "tool_calls"


async def test_two_tool_calls_have_their_own_indexes(server: Server) -> None:
    server.script(reply(WEATHER_CALL + WEATHER_CALL.replace("Paris", "Rome")))
    body = await unary(server, chat(tools=[WEATHER_TOOL]))
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris", "Rome"]
    assert len({c["id"] for c in calls}) == 2
    assert body["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize("extra", [{}, {"tools": [WEATHER_TOOL], "tool_choice": "none"}], ids=["no-tools", "none"])
async def test_tool_call_text_is_content_when_tools_are_off(server: Server, extra: dict) -> None:
    server.script(reply("Sure." + WEATHER_CALL))
    body = await unary(server, chat(**extra))
    c = body["choices"][0]
    assert c["message"]["content"] == "Sure." + WEATHER_CALL and "tool_calls" not in c["message"]
    assert c["finish_reason"] == "stop"


async def test_named_tool_choice_keeps_only_that_function(server: Server) -> None:
    time_tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    server.script(reply('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>' + WEATHER_CALL))
    body = await unary(server, chat(tools=[time_tool, WEATHER_TOOL],
                                    tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"


async def test_deepseek_r1_reasoning_starts_inside_the_block(make_server: MakeServer) -> None:
    server = await make_server(reasoning_parser="deepseek_r1")
    server.script(reply("Two plus two is four.</think>The answer is 4."))
    msg = (await unary(server, chat()))["choices"][0]["message"]
    assert msg == {"role": "assistant", "reasoning_content": "Two plus two is four.", "content": "The answer is 4."}
    (chs,) = per_index(await stream(server, chat())).values()
    assert text_of(chs, "reasoning_content") == "Two plus two is four." and text_of(chs) == "The answer is 4."


async def test_stop_string_inside_reasoning(make_server: MakeServer) -> None:
    server = await make_server(reasoning_parser="deepseek_r1")
    server.script(reply("Thinking STOP more</think>The answer."))
    c = (await unary(server, chat(stop="STOP")))["choices"][0]
    assert c["message"] == {"role": "assistant", "reasoning_content": "Thinking ", "content": ""}
    assert c["finish_reason"] == "stop" and c["stop_reason"] == "STOP"


# --- in-process mocker ---------------------------------------------------------------------------------
async def test_mocker_reports_prefix_cache_hits_in_usage(make_server: MakeServer) -> None:
    server = await make_server("mocker", block_size=16)
    words = " ".join(f"w{i}" for i in range(200))
    first = await unary(server, chat(words, max_tokens=2))
    again = await unary(server, chat(words, max_tokens=2))
    prompt = first["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    # the whole blocks of the repeated prompt are cached (the last partial block and token are not)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == (prompt - 1) // 16 * 16
