"""The official anthropic SDK (sync and async) against a real server: create, stream helpers, tools, thinking,
count_tokens and typed errors."""

from __future__ import annotations

import json
import os
from typing import Iterator

import anthropic
import pytest

from conformance.server import ServerProcess, start_server

pytestmark = pytest.mark.timeout(60)

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "tests", "anthropic", "script.json")
MSG = [{"role": "user", "content": "Tell me a story about a lighthouse."}]
WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                             "unit": {"enum": ["C", "F"]}},
                            "required": ["city"]}}


def _client(url: str, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=30)


def _aclient(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def mocker_server(engine_args: list[str]):
    """Start a mocker server with extra flags, once per module and flag set; skipped for other engines."""
    if engine_args[:2] != ["--engine", "mocker"]:
        pytest.skip("needs the mocker's scripted output modes")
    started: dict[tuple[str, ...], ServerProcess] = {}

    def get(*args: str) -> ServerProcess:
        if args not in started:
            started[args] = start_server([*engine_args, *args])
        return started[args]

    yield get
    for srv in started.values():
        srv.stop()


@pytest.fixture(scope="module")
def script_url(mocker_server) -> str:
    return mocker_server("--mocker-output", f"script:{SCRIPT}", "--reasoning-parser", "basic",
                         "--tool-call-parser", "hermes").url


@pytest.fixture
def client(base_url: str) -> Iterator[anthropic.Anthropic]:
    with _client(base_url) as c:
        yield c


# --- plain text ---------------------------------------------------------------------------------
def test_create(client: anthropic.Anthropic, model_name: str) -> None:
    m = client.messages.create(model=model_name, max_tokens=20, messages=MSG)
    assert isinstance(m, anthropic.types.Message)
    assert m.id.startswith("msg_") and m.role == "assistant" and m.model == model_name
    assert m.content and m.content[0].type == "text" and m.content[0].text
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert 0 < m.usage.output_tokens <= 20
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens == client.messages.count_tokens(
        model=model_name, messages=MSG).input_tokens


def test_stream_helpers(client: anthropic.Anthropic, model_name: str) -> None:
    with client.messages.stream(model=model_name, max_tokens=30, messages=MSG) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0


def test_stream_raw_events(client: anthropic.Anthropic, model_name: str) -> None:
    events = list(client.messages.create(model=model_name, max_tokens=10, messages=MSG, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types[1] == "content_block_start" and "content_block_stop" in types


async def test_async_create_and_stream(base_url: str, model_name: str) -> None:
    async with _aclient(base_url) as c:
        m = await c.messages.create(model=model_name, max_tokens=15, messages=MSG,
                                    system="You are a poet.", metadata={"user_id": "u-1"},
                                    extra_body={"temperature": 0.7, "top_k": 40, "top_p": 0.9})
        assert m.content[0].type == "text" and m.usage.output_tokens <= 15
        async with c.messages.stream(model=model_name, max_tokens=15, messages=MSG) as stream:
            parts = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(parts) == final.content[0].text
        counted = await c.messages.count_tokens(model=model_name, messages=MSG, system="You are a poet.")
        assert counted.input_tokens > (await c.messages.count_tokens(model=model_name, messages=MSG)).input_tokens


def test_stop_sequence(script_url: str, model_name: str) -> None:
    with _client(script_url) as c:
        m = c.messages.create(model=model_name, max_tokens=50, stop_sequences=["STOP"],
                              messages=[{"role": "user", "content": "STOP_SEQ"}])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "STOP" and m.content[0].text == "one two "


# --- tools ----------------------------------------------------------------------------------------
def test_tool_use_from_schema(mocker_server, model_name: str) -> None:
    url = mocker_server("--mocker-output", "tool-calls", "--tool-call-parser", "hermes").url
    with _client(url) as c:
        m = c.messages.create(model=model_name, max_tokens=200, tools=[WEATHER], messages=MSG,
                              tool_choice={"type": "any"})
        assert m.stop_reason == "tool_use"
        block = m.content[-1]
        assert isinstance(block, anthropic.types.ToolUseBlock)
        assert block.name == "get_weather" and block.id.startswith("toolu_")
        assert isinstance(block.input["city"], str) and block.input.get("unit", "C") in ("C", "F")
        with c.messages.stream(model=model_name, max_tokens=200, tools=[WEATHER], messages=MSG) as stream:
            json_parts = [e.partial_json for e in stream if e.type == "input_json"]
            final = stream.get_final_message()
        streamed = final.content[-1]
        assert streamed.type == "tool_use" and final.stop_reason == "tool_use"
        assert json_parts and json.loads("".join(json_parts)) == streamed.input
        assert isinstance(streamed.input["city"], str)


def test_tool_round_trip(script_url: str, model_name: str) -> None:
    with _client(script_url) as c:
        history = [{"role": "user", "content": "TEXT_THEN_TOOL: weather in Paris?"}]
        first = c.messages.create(model=model_name, max_tokens=200, tools=[WEATHER], messages=history)
        assert first.stop_reason == "tool_use"
        assert [b.type for b in first.content] == ["text", "tool_use"]
        call = first.content[1]
        assert call.input == {"city": "Paris", "days": 2}
        history += [{"role": "assistant", "content": first.content},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                  "content": "sunny, 24C"}]}]
        answer = c.messages.create(model=model_name, max_tokens=200, tools=[WEATHER], messages=history)
    assert answer.stop_reason == "end_turn"
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text == "It is sunny in Paris."


async def test_async_tool_stream(script_url: str, model_name: str) -> None:
    async with _aclient(script_url) as c:
        async with c.messages.stream(model=model_name, max_tokens=200, tools=[WEATHER],
                                     messages=[{"role": "user", "content": "TEXT_THEN_TOOL"}]) as stream:
            kinds = [e.type async for e in stream]
            final = await stream.get_final_message()
    assert "text" in kinds and "input_json" in kinds
    assert kinds.index("text") < kinds.index("input_json")
    assert final.content[1].input == {"city": "Paris", "days": 2} and final.stop_reason == "tool_use"


# --- thinking -------------------------------------------------------------------------------------
def test_thinking_blocks(mocker_server, model_name: str) -> None:
    url = mocker_server("--mocker-output", "reasoning", "--reasoning-parser", "basic").url
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with _client(url) as c:
        m = c.messages.create(model=model_name, max_tokens=2048, thinking=thinking, messages=MSG)
        assert [b.type for b in m.content] == ["thinking", "text"]
        assert m.content[0].thinking and m.content[0].signature and m.content[1].text
        with c.messages.stream(model=model_name, max_tokens=2048, thinking=thinking, messages=MSG) as stream:
            kinds = [e.type for e in stream]
            final = stream.get_final_message()
        assert kinds.index("thinking") < kinds.index("signature") < kinds.index("text")
        assert [b.type for b in final.content] == ["thinking", "text"]
        assert final.content[0].thinking and final.content[0].signature and final.content[1].text
        # the thinking block goes back into the conversation as the SDK returned it
        again = c.messages.create(model=model_name, max_tokens=2048, thinking=thinking, messages=[
            *MSG, {"role": "assistant", "content": m.content}, {"role": "user", "content": "And then?"}])
        assert again.content[-1].type == "text"


# --- errors ---------------------------------------------------------------------------------------
def test_bad_request_errors(client: anthropic.Anthropic, model_name: str) -> None:
    cases = [
        dict(max_tokens=0, messages=MSG),
        dict(max_tokens=10, messages=[]),
        dict(max_tokens=10, messages=MSG, extra_body={"temperature": 3.0}),
        dict(max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]),
        dict(max_tokens=10, messages=MSG, extra_body={"not_a_field": 1}),
        dict(max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]),
    ]
    for kw in cases:
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.messages.create(model=model_name, **kw)
        assert exc.value.status_code == 400
        assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "invalid_request_error"


def test_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="no-such-model", max_tokens=5, messages=MSG)
    assert exc.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=MSG)


def test_authentication_and_size_errors(mocker_server, model_name: str) -> None:
    url = mocker_server("--api-key", "sekret", "--max-body-size", "4096").url
    with _client(url, key="wrong") as c, pytest.raises(anthropic.AuthenticationError) as exc:
        c.messages.create(model=model_name, max_tokens=5, messages=MSG)
    assert exc.value.body["error"]["type"] == "authentication_error"
    with _client(url, key="sekret") as c:
        assert c.messages.create(model=model_name, max_tokens=5, messages=MSG).content
        with pytest.raises(anthropic.ContentTooLargeError) as exc:
            c.messages.create(model=model_name, max_tokens=5, messages=[{"role": "user", "content": "x" * 8000}])
        assert exc.value.body["error"]["type"] == "request_too_large"


def test_engine_failure_errors(mocker_server, model_name: str) -> None:
    url = mocker_server("--mocker-fail-after", "2").url
    with _client(url) as c:
        with pytest.raises(anthropic.ServiceUnavailableError) as exc:
            c.messages.create(model=model_name, max_tokens=50, messages=MSG)
        assert exc.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.APIStatusError) as exc, \
                c.messages.stream(model=model_name, max_tokens=50, messages=MSG) as stream:
            for _ in stream:
                pass
        assert exc.value.body["error"]["type"] == "overloaded_error"
