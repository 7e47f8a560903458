"""POST /v1/messages (non-streaming) and /v1/messages/count_tokens: shapes, mappings, errors."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo_mono.http.anthropic_routes import thinking_signature
from dynamo_mono.http.state import STATE
from dynamo_mono.protocol.anthropic import AnthropicMessage, MessagesRequest, to_chat_request
from dynamo_mono.server import stop_engines
from tests.anthropic.conftest import MODEL, TIME_TOOL, WEATHER_TOOL, body, build_app

pytestmark = pytest.mark.timeout(10)


async def post(client: Any, payload: dict, path: str = "/v1/messages", **kw: Any) -> tuple[int, dict]:
    r = await client.post(path, json=payload, **kw)
    return r.status, await r.json()


async def count(client: Any, payload: dict) -> int:
    payload = {k: v for k, v in payload.items() if k not in ("max_tokens", "stream", "stop_sequences")}
    status, data = await post(client, payload, "/v1/messages/count_tokens")
    assert status == 200, data
    return data["input_tokens"]


async def test_text_message_shape(client: Any) -> None:
    status, msg = await post(client, body("Hello"))
    assert status == 200, msg
    AnthropicMessage.model_validate(msg)
    assert msg["id"].startswith("msg_") and msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["model"] == MODEL
    assert msg["content"] == [{"type": "text", "text": "Hello! How can I help you today?"}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None
    u = msg["usage"]
    assert u["output_tokens"] > 0 and u["cache_creation_input_tokens"] == 0
    assert u["input_tokens"] + u["cache_read_input_tokens"] == await count(client, body("Hello"))


async def test_max_tokens_stop_reason(client: Any) -> None:
    status, msg = await post(client, body("Hello", max_tokens=2))
    assert status == 200
    assert msg["stop_reason"] == "max_tokens" and msg["usage"]["output_tokens"] == 2


async def test_stop_sequence(client: Any) -> None:
    status, msg = await post(client, body("STOP_SEQ", stop_sequences=["STOP"]))
    assert status == 200, msg
    assert msg["stop_reason"] == "stop_sequence" and msg["stop_sequence"] == "STOP"
    assert msg["content"] == [{"type": "text", "text": "one two "}]


async def test_thinking_then_text(client: Any) -> None:
    payload = body("THINK_THEN_TEXT", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024})
    status, msg = await post(client, payload)
    assert status == 200, msg
    thinking, text = msg["content"]
    assert thinking == {"type": "thinking", "thinking": "Two plus two is four.",
                        "signature": thinking_signature("Two plus two is four.")}
    assert text == {"type": "text", "text": "The answer is 4."}
    assert msg["stop_reason"] == "end_turn"


async def test_thinking_display_omitted_keeps_signature(client: Any) -> None:
    payload = body("THINK_THEN_TEXT", thinking={"type": "adaptive", "display": "omitted"})
    status, msg = await post(client, payload)
    assert status == 200, msg
    assert msg["content"][0] == {"type": "thinking", "thinking": "",
                                 "signature": thinking_signature("Two plus two is four.")}


async def test_text_then_tool_use(client: Any) -> None:
    status, msg = await post(client, body("TEXT_THEN_TOOL", tools=[WEATHER_TOOL]))
    assert status == 200, msg
    text, tool = msg["content"]
    assert text == {"type": "text", "text": "Let me check the weather."}
    assert tool["type"] == "tool_use" and tool["id"].startswith("toolu_") and tool["name"] == "get_weather"
    assert tool["input"] == {"city": "Paris", "days": 2}
    assert msg["stop_reason"] == "tool_use"


async def test_whitespace_between_thinking_and_tool_opens_no_text_block(client: Any) -> None:
    status, msg = await post(client, body("THINK_WS_TOOL", tools=[WEATHER_TOOL]))
    assert status == 200, msg
    assert [b["type"] for b in msg["content"]] == ["thinking", "tool_use"]


async def test_parallel_tools_and_disable_parallel(client: Any) -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    status, msg = await post(client, body("TWO_TOOLS", tools=tools))
    assert status == 200, msg
    assert [(b["name"], b["input"]) for b in msg["content"]] == [("get_weather", {"city": "Paris"}),
                                                                 ("get_time", {"tz": "UTC"})]
    assert len({b["id"] for b in msg["content"]}) == 2
    status, msg = await post(client, body("TWO_TOOLS", tools=tools,
                                          tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert [b["name"] for b in msg["content"]] == ["get_weather"] and msg["stop_reason"] == "tool_use"


async def test_tool_choice_none_leaves_calls_as_text(client: Any) -> None:
    status, msg = await post(client, body("TEXT_THEN_TOOL", tools=[WEATHER_TOOL], tool_choice={"type": "none"}))
    assert status == 200, msg
    assert [b["type"] for b in msg["content"]] == ["text"] and "<tool_call>" in msg["content"][0]["text"]
    assert msg["stop_reason"] == "end_turn"


async def test_tool_round_trip(client: Any) -> None:
    first = body("TEXT_THEN_TOOL", tools=[WEATHER_TOOL])
    _, msg = await post(client, first)
    tool = msg["content"][-1]
    follow = {**first, "messages": [
        first["messages"][0],
        {"role": "assistant", "content": msg["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool["id"],
                                      "content": [{"type": "text", "text": "sunny, 24C"}]}]},
    ]}
    status, answer = await post(client, follow)
    assert status == 200, answer
    assert answer["content"] == [{"type": "text", "text": "It is sunny in Paris."}]
    assert await count(client, follow) > await count(client, first)


async def test_tool_result_error_flag_reaches_prompt(client: Any) -> None:
    def convo(is_error: bool) -> dict:
        return body(tools=[WEATHER_TOOL], messages=[
            {"role": "user", "content": "TEXT_THEN_TOOL"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom",
                                          "is_error": is_error}]}])
    assert await count(client, convo(True)) > await count(client, convo(False))


async def test_count_tokens_counts_system_tools_and_thinking(client: Any) -> None:
    base = await count(client, body("Hello"))
    assert await count(client, body("Hello", system="You are terse.")) > base
    assert await count(client, body("Hello", system=[{"type": "text", "text": "You are terse."}])) > base
    assert await count(client, body("Hello", tools=[WEATHER_TOOL])) > base
    assert await count(client, body("Hello", thinking={"type": "disabled"})) > base  # template closes <think>


async def rendered(payload: dict) -> str:
    """The prompt text the server's chat template makes of a Messages request."""
    app = await build_app()
    try:
        chat = to_chat_request(MessagesRequest.model_validate(payload))
        model = app[STATE].model(MODEL)
        return model.render_chat(chat.messages, tools=chat.tools, add_generation_prompt=not chat.continue_final,
                                 continue_final_message=chat.continue_final, template_kwargs=chat.template_kwargs)
    finally:
        await stop_engines(app[STATE])


async def test_prefill_continues_assistant_message() -> None:
    prompt = await rendered(body(messages=[{"role": "user", "content": "Hello"},
                                           {"role": "assistant", "content": "Sure, here"}]))
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nSure, here")  # no end of turn


async def test_conversation_rendering() -> None:
    turns = [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "text", "text": "Now."}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Use the tool.", "signature": "x"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "no network", "is_error": True}]},
    ]
    prompt = await rendered(body(system=[{"type": "text", "text": "Be terse."}], messages=turns,
                                 tools=[WEATHER_TOOL]))
    assert prompt.startswith("<|im_start|>system\nBe terse.\n\n# Tools")
    assert '"name": "get_weather"' in prompt
    assert "<|im_start|>user\nWeather?\nNow.<|im_end|>" in prompt
    assert ("<|im_start|>assistant\n<think>\nUse the tool.\n</think>\n\nChecking.\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call><|im_end|>') in prompt
    assert "<|im_start|>user\n<tool_response>\nError: no network\n</tool_response><|im_end|>" in prompt
    # a tool result followed by text in one user turn: the result comes first, then the text
    turns[2]["content"].append({"type": "text", "text": "Thanks"})
    prompt = await rendered(body(messages=turns, tools=[WEATHER_TOOL]))
    assert prompt.index("</tool_response>") < prompt.index("Thanks")


async def test_metadata_and_sdk_fields_tolerated(client: Any) -> None:
    status, msg = await post(client, body("Hello", metadata={"user_id": "u1"}, service_tier="auto",
                                          temperature=0.5, top_p=0.9, top_k=5),
                             headers={"anthropic-version": "2023-06-01", "anthropic-beta": "foo-2025-01-01"})
    assert status == 200, msg


@pytest.mark.parametrize("payload, fragment", [
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(bogus=1), "bogus"),
    (body(temperature=1.5), "temperature"),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "assistant", "content": "hi"}]), "first message"),
    (body(messages=[{"role": "user", "content": ""}]), "non-empty"),
    (body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]), "non-empty"),
    (body(messages=[{"role": "user", "content": [{"type": "video", "x": 1}]}]), "messages"),
    (body(tool_choice={"type": "any"}), "tool_choice"),
    (body(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "nope"}), "nope"),
    (body(thinking={"type": "enabled", "budget_tokens": 100}), "budget_tokens"),
    (body(thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=1500), "budget_tokens"),
    (body(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                                  "content": "r"}]}]), "toolu_x"),
    (body(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "text", "text": "what is this"}]}]), "does not accept image input"),
])
async def test_invalid_requests_are_400(client: Any, payload: dict, fragment: str) -> None:
    status, data = await post(client, payload)
    assert status == 400, data
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert fragment in data["error"]["message"]


async def test_malformed_json_and_unknown_model(client: Any) -> None:
    r = await client.post("/v1/messages", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and (await r.json())["error"]["type"] == "invalid_request_error"
    status, data = await post(client, {**body(), "model": "nope"})
    assert status == 404 and data == {"type": "error", "error": {"type": "not_found_error",
                                                                  "message": data["error"]["message"]}}
    status, data = await post(client, {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                              "/v1/messages/count_tokens")
    assert status == 404 and data["error"]["type"] == "not_found_error"


async def test_request_too_large(make_client: Any) -> None:
    client = await make_client(max_body_size=2048)
    status, data = await post(client, body("x" * 4096))
    assert status == 413 and data["error"]["type"] == "request_too_large"


async def test_api_key(make_client: Any) -> None:
    client = await make_client(api_key="sekret")
    status, data = await post(client, body())
    assert status == 401 and data["error"]["type"] == "authentication_error"
    status, _ = await post(client, body(), headers={"x-api-key": "sekret", "anthropic-version": "2023-06-01"})
    assert status == 200


async def test_routes_off_with_no_anthropic_api(make_client: Any) -> None:
    client = await make_client(anthropic_api=False)
    status, data = await post(client, body())
    assert status == 404 and data["error"]["type"] == "not_found_error"


async def test_engine_failure_is_overloaded_error(make_client: Any) -> None:
    client = await make_client(mocker_fail_after=1)
    status, data = await post(client, body())
    assert status == 503 and data["error"]["type"] == "overloaded_error"


async def test_openapi_lists_messages_routes(client: Any) -> None:
    r = await client.get("/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert {"/v1/messages", "/v1/messages/count_tokens"} <= set(doc["paths"])
    assert {"MessagesRequest", "CountTokensRequest", "AnthropicMessage"} <= set(doc["components"]["schemas"])
