"""build_output_parser: registry lookup, tool_choice semantics, the no-parsing fast path."""

from __future__ import annotations

import pytest

from dynamo_mono.parsers.formats import format_tool_calls
from dynamo_mono.parsers.plugin import REASONING, TOOL_CALL
from dynamo_mono.parsers.stream import build_output_parser, merge
from dynamo_mono.plugins import get_plugins
from tests.parsers.helpers import TOOLS, strip_ids

pytestmark = pytest.mark.timeout(10)


def test_every_builtin_is_registered_through_the_entry_point():
    plugins = get_plugins()
    assert set(REASONING) <= set(plugins.registered("reasoning_parser"))
    assert set(TOOL_CALL) <= set(plugins.registered("tool_call_parser"))


def test_nothing_to_parse_gives_none():
    assert build_output_parser(None, None, tools=TOOLS, tool_choice="auto", chat_template_kwargs=None, registry=get_plugins()) is None
    # a tool parser but no tools in the request, or tool_choice none
    assert build_output_parser(None, "hermes", tools=None, tool_choice=None, chat_template_kwargs=None, registry=get_plugins()) is None
    assert build_output_parser(None, "hermes", tools=TOOLS, tool_choice="none", chat_template_kwargs=None, registry=get_plugins()) is None


def test_tool_choice_none_leaves_call_text_as_content():
    p = build_output_parser("basic", "hermes", tools=TOOLS, tool_choice="none", chat_template_kwargs=None, registry=get_plugins())
    text = format_tool_calls("hermes", [("get_time", {})])
    assert p.parse_complete(text) == ("", text, [])


@pytest.mark.parametrize("choice", ["auto", "required", None])
def test_auto_and_required_parse_calls(choice):
    p = build_output_parser(None, "hermes", tools=TOOLS, tool_choice=choice, chat_template_kwargs=None, registry=get_plugins())
    text = format_tool_calls("hermes", [("get_time", {}), ("get_weather", {"city": "x"})])
    assert [c["function"]["name"] for c in p.parse_complete(text)[2]] == ["get_time", "get_weather"]


def test_named_tool_choice_keeps_only_that_function_reindexed():
    choice = {"type": "function", "function": {"name": "get_weather"}}
    p = build_output_parser(None, "hermes", tools=TOOLS, tool_choice=choice, chat_template_kwargs=None, registry=get_plugins())
    text = format_tool_calls("hermes", [("get_time", {}), ("get_weather", {"city": "x"})])
    deltas = [p.feed(ch) for ch in text] + [p.finish()]
    indexes = {tc.index for d in deltas for tc in d.tool_calls}
    assert indexes == {0}
    assert strip_ids(merge(deltas))[2] == [("get_weather", '{"city": "x"}')]


def test_chat_template_kwargs_disable_thinking():
    p = build_output_parser("qwen3", None, tools=None, tool_choice=None, chat_template_kwargs={"enable_thinking": False}, registry=get_plugins())
    assert p.parse_complete("<think>a</think>b") == ("", "<think>a</think>b", [])
    p = build_output_parser("qwen3", None, tools=None, tool_choice=None, chat_template_kwargs={}, registry=get_plugins())
    assert p.parse_complete("<think>a</think>b") == ("a", "b", [])


def test_unknown_parser_name_is_a_clear_error():
    with pytest.raises(LookupError, match="hermes"):
        build_output_parser(None, "nope", tools=TOOLS, tool_choice="auto", chat_template_kwargs=None, registry=get_plugins())


def test_call_ids_are_openai_style_and_unique():
    p = build_output_parser(None, "hermes", tools=TOOLS, tool_choice="auto", chat_template_kwargs=None, registry=get_plugins())
    calls = p.parse_complete(format_tool_calls("hermes", [("get_time", {})] * 3))[2]
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 3 and all(i.startswith("call_") and len(i) == 29 for i in ids)
    assert all(c["type"] == "function" for c in calls)
