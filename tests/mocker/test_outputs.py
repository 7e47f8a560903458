"""Output modes: echo, reasoning, tool calls from schemas, scripted responses, config errors."""

from __future__ import annotations

import json

import pytest

from dynamo_mono.config import ConfigError
from mocker.outputs import example_value, parse_output_mode

from .conftest import FakeTokenizer, collect, make_engine, make_request, tokens_of

pytestmark = pytest.mark.timeout(20)

try:
    from dynamo_mono.parsers.formats import format_reasoning, format_tool_calls
except ImportError:  # being written by another engineer; the text modes need it
    format_reasoning = format_tool_calls = None
needs_formats = pytest.mark.skipif(format_reasoning is None, reason="dynamo_mono.parsers.formats not available yet")

TOK = FakeTokenizer()


def text(outputs: list) -> str:
    return TOK.decode(tokens_of(outputs))


async def test_echo_returns_prompt_text_then_eos() -> None:
    e = make_engine(mocker_output="echo")
    outs = await collect(e, make_request("e", TOK.encode("hello mocker"), max_tokens=100, ignore_eos=False))
    assert text(outs) == "hello mocker"
    assert outs[-1].finish_reason == "stop" and outs[-1].stop_token_id == 256


@needs_formats
async def test_reasoning_mode_uses_configured_parser_format() -> None:
    e = make_engine(mocker_output="reasoning", reasoning_parser="basic")
    outs = await collect(e, make_request("r", max_tokens=500, ignore_eos=False))
    body = text(outs)
    assert body.startswith("<think>") and "</think>" in body and body.split("</think>", 1)[1].strip()
    named = make_engine(mocker_output="reasoning:basic")
    assert text(await collect(named, make_request("r", max_tokens=500, ignore_eos=False))) == body


@needs_formats
async def test_tool_call_mode_builds_arguments_from_schema() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "required": ["city", "days"],
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7},
                       "unit": {"type": "string", "enum": ["c", "f"]}}}}}]
    e = make_engine(mocker_output="tool-calls:hermes")
    outs = await collect(e, make_request("t", max_tokens=500, ignore_eos=False, tools=tools))
    body = text(outs)
    payload = json.loads(body.split("<tool_call>", 1)[1].split("</tool_call>", 1)[0])
    assert payload["name"] == "get_weather"
    args = payload["arguments"]
    assert isinstance(args["city"], str) and 1 <= args["days"] <= 7 and args["unit"] in ("c", "f")


async def test_script_file_entries_and_match(tmp_path) -> None:
    script = tmp_path / "s.jsonl"
    script.write_text('{"match": "weather", "text": "It is sunny."}\n"Default answer."\n')
    e = make_engine(mocker_output=f"script:{script}")
    a = await collect(e, make_request("a", TOK.encode("what is the weather"), max_tokens=100, ignore_eos=False))
    b = await collect(e, make_request("b", TOK.encode("tell me a joke"), max_tokens=100, ignore_eos=False))
    assert text(a) == "It is sunny." and text(b) == "Default answer."
    plain = tmp_path / "one.txt"
    plain.write_text("plain text reply")
    e2 = make_engine(mocker_output=f"script:{plain}")
    assert text(await collect(e2, make_request("c", max_tokens=100, ignore_eos=False))) == "plain text reply"


def test_bad_output_specs_raise_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="mocker-output"):
        parse_output_mode("banana")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_output_mode(f"script:{tmp_path / 'missing.json'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"text": 5}\n')
    with pytest.raises(ConfigError, match="line 2"):
        parse_output_mode(f"script:{bad}")


def test_example_values_follow_schema() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "number", "minimum": 2, "maximum": 3}, "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "mode": {"const": "fast"}, "maybe": {"type": ["null", "integer"]}}}
    v = example_value(schema, "root", 12345)
    assert 2 <= v["n"] <= 3 and isinstance(v["flag"], bool) and v["mode"] == "fast"
    assert len(v["tags"]) == 2 and all(isinstance(t, str) for t in v["tags"]) and isinstance(v["maybe"], int)
    assert example_value(schema, "root", 12345) == v


@needs_formats
def test_unknown_parser_format_fails_at_startup() -> None:
    with pytest.raises(ConfigError, match="unknown parser"):
        make_engine(mocker_output="reasoning:no-such-parser")
    with pytest.raises(ConfigError, match="unknown parser"):
        make_engine(mocker_output="tool-calls:no-such-parser")
