"""Per-family vectors in the exact text each model family emits, streamed char by char and whole."""

from __future__ import annotations

import json

import pytest

from tests.parsers.helpers import complete, loads_calls, make, streamed

pytestmark = pytest.mark.timeout(10)


def both(parser_args: dict, text: str):
    """Whole-text parse, after asserting a char-by-char stream gives the same."""
    whole = complete(make(**parser_args), text)
    assert streamed(make(**parser_args), list(text)) == whole
    return whole


# --- reasoning ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, text, reasoning, content",
    [
        ("basic", "<think>Let me add.</think>It is 4.", "Let me add.", "It is 4."),
        ("basic", "\n<think>a<b</think>\n\nok", "a<b", "\n\nok"),
        ("basic", "No thinking here <think>x</think>", "", "No thinking here <think>x</think>"),
        ("qwen3", "<think>\nhmm\n</think>\n\nHello", "\nhmm\n", "\n\nHello"),
        ("deepseek_r1", "step 1, step 2</think>Answer", "step 1, step 2", "Answer"),
        ("deepseek_r1", "<think>step</think>Answer", "step", "Answer"),
        ("deepseek_r1", "never closed", "never closed", ""),
        ("minimax_append_think", "plan it</think>\ndone", "plan it", "\ndone"),
        ("minimax", "<think>kept</think>done", "", "<think>kept</think>done"),
        ("mistral", "[THINK]2+2[/THINK]4", "2+2", "4"),
        ("kimi", "◁think▷用户问候◁/think▷你好", "用户问候", "你好"),
        ("granite", "Here is my thought process: a\nHere is my response: b", " a\n", " b"),
        ("granite", "Here's my thought process:x Here's my response:y", "x ", "y"),
        (
            "gpt_oss",
            "<|channel|>analysis<|message|>User asks.<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>",
            "User asks.",
            "Hi!",
        ),
    ],
)
def test_reasoning_vectors(name, text, reasoning, content):
    assert both({"reasoning": name}, text) == (reasoning, content, [])


def test_reasoning_streams_as_it_arrives():
    p = make("basic")
    assert p.feed("<think>abc").reasoning == "abc"
    d = p.feed("de</th")  # a possible end tag is held back, nothing else
    assert (d.reasoning, d.content) == ("de", "")
    d = p.feed("ink>Hi")
    assert (d.reasoning, d.content) == ("", "Hi")


def test_unclosed_partial_end_tag_is_flushed_at_finish():
    p = make("basic")
    p.feed("<think>abc</thi")
    d = p.finish()
    assert d.reasoning == "</thi"


@pytest.mark.parametrize("kw", [{"enable_thinking": False}, {"thinking": False}])
def test_thinking_disabled_means_all_content(kw):
    assert both({"reasoning": "qwen3", **kw}, "<think>x</think>y") == ("", "<think>x</think>y", [])


def test_tool_call_right_after_think_end_is_not_swallowed():
    text = '<think>need weather</think><tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert both({"reasoning": "qwen3", "tool": "hermes"}, text) == ("need weather", "", [("get_time", "{}")])


def test_gpt_oss_reasoning_with_harmony_tool_call():
    text = (
        "<|channel|>analysis<|message|>Need weather.<|end|>"
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"SF"}<|call|>'
    )
    assert both({"reasoning": "gpt_oss", "tool": "harmony"}, text) == (
        "Need weather.",
        "",
        [("get_weather", '{"city":"SF"}')],
    )


# --- tool calls --------------------------------------------------------------------------------
W = ("get_weather", {"city": "Paris", "days": 3})
T = ("get_time", {})

TOOL_VECTORS = {
    "hermes": [
        (
            'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
            "Sure.\n",
            [W, T],
        ),
        # arguments before name; string containing the end tag
        (
            '<tool_call>{"arguments": {"city": "</tool_call>"}, "name": "get_weather"}</tool_call>',
            "",
            [("get_weather", {"city": "</tool_call>"})],
        ),
    ],
    "llama3_json": [
        ('{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}', "", [W]),
        (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}; '
            '{"name": "get_time", "parameters": {}}',
            "",
            [W, T],
        ),
        ('The JSON is {"name": "x"}', 'The JSON is {"name": "x"}', []),
    ],
    "mistral": [
        (
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, '
            '{"name": "get_time", "arguments": {}}]',
            "",
            [W, T],
        ),
        ('[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 3}[TOOL_CALLS]get_time[ARGS]{}', "", [W, T]),
        ('[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}', "", [T]),
        ("See [docs](x) [TOOL_", "See [docs](x) [TOOL_", []),
    ],
    "pythonic": [
        ('[get_weather(city="Paris", days=3), get_time()]', "", [W, T]),
        ("[get_weather(city='a]b', days=3)]", "", [("get_weather", {"city": "a]b", "days": 3})]),
        ("[1, 2, 3] is a list", "[1, 2, 3] is a list", []),
        ('Calling.<|python_start|>[get_time()]<|python_end|>', "Calling.", [T]),
    ],
    "qwen3_coder": [
        (
            "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
            "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n"
            "</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n</function>\n</tool_call>",
            "\n",
            [("get_weather", {"city": "Paris", "days": 3, "metric": True}), T],
        ),
        # typed by schema: a string stays a string even when it looks like a number
        (
            "<tool_call>\n<function=get_weather>\n<parameter=city>\n123\n</parameter>\n"
            "<parameter=hours>\n[1, 2]\n</parameter>\n</function>\n</tool_call>",
            "",
            [("get_weather", {"city": "123", "hours": [1, 2]})],
        ),
    ],
    "deepseek_v3": [
        (
            "Let me check.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
            '{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n'
            "```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
            "Let me check.",
            [W, T],
        ),
        (
            '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
            "",
            [T],
        ),
    ],
    "minimax_m2": [
        (
            'Ok.\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n'
            '<parameter name="days">3</parameter>\n</invoke>\n<invoke name="get_time">\n</invoke>\n</minimax:tool_call>',
            "Ok.\n",
            [W, T],
        ),
    ],
    "harmony": [
        (
            "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
            '{"city": "Paris", "days": 3}<|call|>',
            "",
            [W],
        ),
        (
            "<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{}<|call|>",
            "",
            [T],
        ),
    ],
    "kimi_k2": [
        (
            "I'll check.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
            '<|tool_call_argument_begin|>{"city": "Paris", "days": 3}<|tool_call_end|>'
            "<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|>"
            "<|tool_calls_section_end|>",
            "I'll check.",
            [W, T],
        ),
    ],
    "glm45": [
        (
            "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
            "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
            "<tool_call>get_time\n</tool_call>",
            "",
            [W, T],
        ),
        (
            "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value><tool_call> & </arg_key></arg_value>\n</tool_call>",
            "",
            [("get_weather", {"city": "<tool_call> & </arg_key>"})],
        ),
    ],
}

CASES = [(name, *case) for name, cases in TOOL_VECTORS.items() for case in cases]


@pytest.mark.parametrize("name, text, content, calls", CASES)
def test_tool_call_vectors(name, text, content, calls):
    reasoning, got_content, got_calls = both({"tool": name}, text)
    assert reasoning == ""
    assert got_content == content
    assert loads_calls(got_calls) == [(n, a) for n, a in calls]


@pytest.mark.parametrize("name", sorted(TOOL_VECTORS))
def test_hold_back_is_released_when_it_cannot_be_a_call(name):
    """A lone first character of a marker is content as soon as the next one rules the marker out."""
    p = make(tool=name)
    first = p.tools.markers[0][0]
    d1 = p.feed("a" + first)
    d2 = p.feed("\u00e9 b")
    assert d1.content + d2.content == "a" + first + "\u00e9 b"
    assert not d1.tool_calls and not d2.tool_calls


def test_hermes_streams_name_then_argument_fragments():
    p = make(tool="hermes")
    assert p.feed('<tool_call>{"name": "get_weather", ').tool_calls[0].name == "get_weather"
    pieces = ['"arguments": {"ci', 'ty": "Pa', 'ris"}', "}</tool_call>"]
    frags = []
    for piece in pieces:
        frags += [tc.arguments for tc in p.feed(piece).tool_calls]
    assert frags[:2] == ['{"ci', 'ty": "Pa']
    assert "".join(frags) == '{"city": "Paris"}'


def test_xml_arguments_stream_per_parameter_and_equal_json_dumps():
    p = make(tool="qwen3_coder")
    d = p.feed("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n")
    assert d.tool_calls[0].name == "get_weather"
    assert "".join(tc.arguments for tc in d.tool_calls) == '{"city": "Paris"'
    d2 = p.feed("<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
    assert "".join(tc.arguments for tc in d2.tool_calls) == ', "days": 3}'
    assert json.dumps({"city": "Paris", "days": 3}) == '{"city": "Paris", "days": 3}'


@pytest.mark.parametrize(
    "name, text",
    [
        ("hermes", "<tool_call>{not json}</tool_call> tail"),
        ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),  # no name
        ("hermes", '<tool_call>{"arguments": {"a": 1'),  # unclosed at finish, name unknown
        ("kimi_k2", "<|tool_calls_section_begin|>oops"),
        ("minimax_m2", "<minimax:tool_call><invoke nam"),
        ("deepseek_v3", "<｜tool▁calls▁begin｜>garbage"),
        ("pythonic", "[get_weather(city=undefined_name)]"),
        ("glm45", "<tool_call>{broken"),
        ("qwen3_coder", "<tool_call>\n<function=get_ti"),
    ],
)
def test_malformed_comes_back_as_content(name, text):
    assert both({"tool": name}, text) == ("", text, [])


def test_malformed_then_valid_call_is_still_found():
    text = '<tool_call>oops <tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert both({"tool": "hermes"}, text) == ("", "<tool_call>oops ", [("get_time", "{}")])


def test_max_hold_releases_text_as_content():
    from dynamo_mono.parsers.stream import OutputParser
    from dynamo_mono.parsers.tools_json import HermesToolParser

    p = OutputParser(None, HermesToolParser(None, max_hold=100))
    out = p.feed("<tool_call>" + "x" * 50).content
    out += p.feed("y" * 100).content
    assert out == "<tool_call>" + "x" * 50 + "y" * 100  # released before the stream ends
    assert p.finish().content == ""


def test_call_cut_off_after_its_name_keeps_what_was_streamed():
    """Once a call's name went out it cannot be taken back: the unfinished rest is content."""
    text = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<param"
    assert both({"tool": "qwen3_coder"}, text) == ("", "\n<param", [("get_weather", '{"city": "Paris"')])
