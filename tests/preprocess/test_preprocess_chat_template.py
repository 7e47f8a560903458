"""Chat template rendering: the embedded ChatML template's exact output and transformers-compatible semantics."""

from __future__ import annotations

import datetime

import pytest

from dynamo_mono.preprocess import ChatTemplate, TemplateError, load_model_dir

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]

TOOLS_SYSTEM_BLOCK = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n'
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


@pytest.fixture(scope="module")
def tmpl() -> ChatTemplate:
    info = load_model_dir(None)
    assert info.chat_template is not None
    return info.chat_template


def test_system_user_turn(tmpl: ChatTemplate) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert tmpl.render(msgs) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )


def test_no_generation_prompt(tmpl: ChatTemplate) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert tmpl.render(msgs, add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"


def test_multi_turn_drops_old_reasoning(tmpl: ChatTemplate) -> None:
    msgs = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
        {"role": "user", "content": "and 3+3?"},
    ]
    assert tmpl.render(msgs) == (
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nand 3+3?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_content_as_text_parts(tmpl: ChatTemplate) -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]}]
    assert tmpl.render(msgs) == "<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n"


def test_enable_thinking_false_gives_empty_think_block(tmpl: ChatTemplate) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert tmpl.render(msgs, enable_thinking=False) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert tmpl.render(msgs, enable_thinking=True) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tools_in_system_prompt(tmpl: ChatTemplate) -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}]
    assert tmpl.render(msgs, tools=TOOLS) == (
        "<|im_start|>system\nBe brief.\n\n" + TOOLS_SYSTEM_BLOCK
        + "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )
    no_system = tmpl.render([{"role": "user", "content": "Hi"}], tools=TOOLS)
    assert no_system.startswith("<|im_start|>system\n# Tools\n")


def test_tool_call_and_tool_result_turns(tmpl: ChatTemplate) -> None:
    msgs = [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "21C sunny"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "9C rain"}]},
        {"role": "assistant", "content": "Paris is warmer."},
    ]
    assert tmpl.render(msgs, add_generation_prompt=False) == (
        "<|im_start|>user\nWeather in Paris and Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n21C sunny\n</tool_response>\n"
        "<tool_response>\n9C rain\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nParis is warmer.<|im_end|>\n"
    )


def test_assistant_text_before_tool_call(tmpl: ChatTemplate) -> None:
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
        {"role": "user", "content": "ok"},
    ]
    assert "<|im_start|>assistant\nLet me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call><|im_end|>\n" in tmpl.render(msgs)


def test_template_raise_exception_is_template_error(tmpl: ChatTemplate) -> None:
    with pytest.raises(TemplateError, match="Unexpected message role: wizard"):
        tmpl.render([{"role": "wizard", "content": "x"}])
    with pytest.raises(TemplateError, match="at least one message"):
        tmpl.render([])


def test_rendering_errors_are_clean_template_errors() -> None:
    with pytest.raises(TemplateError) as e:
        ChatTemplate("{{ messages[0].content + 1 }}").render([{"role": "user", "content": "x"}])
    assert "TypeError" in str(e.value) and "File" not in str(e.value)
    with pytest.raises(TemplateError, match="'nope' is undefined"):
        ChatTemplate("{{ nope.x + 'a' }}").render([])
    with pytest.raises(TemplateError, match="syntax error at line 2"):
        ChatTemplate("ok\n{{ 1 + }}")
    # The sandbox refuses mutation of caller data.
    with pytest.raises(TemplateError):
        ChatTemplate("{{ messages.append(1) }}").render([])


def test_transformers_environment_semantics() -> None:
    src = (
        "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}"
        "{% generation %}{{ m | tojson }}|{{ m | tojson(indent=1, sort_keys=True) }}{% endgeneration %}"
        "{% if loop.index > 2 %}{% break %}{% endif %}{% endfor %}"
        "{{ bos_token }}{{ eos_token }}|{{ custom }}|{{ strftime_now('%Y') }}"
    )
    t = ChatTemplate(src, bos_token="<s>", eos_token="</s>")
    out = t.render([{"a": 0}, {"z": "é", "b": 1}, {"c": 2}, {"d": 3}], custom="kw")
    year = datetime.datetime.now().strftime("%Y")
    assert out == '{"z": "é", "b": 1}|{\n "b": 1,\n "z": "é"\n}{"c": 2}|{\n "c": 2\n}<s></s>|kw|' + year
    # bos_token not given: undefined, renders empty (not "None").
    assert ChatTemplate("[{{ bos_token }}]").render([]) == "[]"


def test_trim_and_lstrip_blocks() -> None:
    t = ChatTemplate("{% for m in messages %}\n    {% if m %}\n{{ m }}\n    {% endif %}\n{% endfor %}")
    assert t.render(["a", "b"]) == "a\nb\n"


def test_compiled_once_per_source() -> None:
    a = ChatTemplate("{{ messages | length }}")
    b = ChatTemplate("{{ messages | length }}")
    assert a._template is b._template
    assert a.render([1, 2]) == "2"


def test_continue_final_message(tmpl: ChatTemplate) -> None:
    msgs = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hel"}]
    out = tmpl.render(msgs, add_generation_prompt=False, continue_final_message=True)
    assert out.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nHel")
    with pytest.raises(TemplateError):
        tmpl.render(msgs, add_generation_prompt=True, continue_final_message=True)


def test_fast_lookups_keep_jinja_semantics() -> None:
    # Attribute first, then item; missing keys are undefined; str methods work; the sandbox still guards internals.
    t = ChatTemplate(
        "{% for m in messages %}{{ m.role }}:{{ m.items() | list | length }}:{{ m.missing is defined }}:"
        "{{ m.content.upper().split(' ') | join('_') }};{% endfor %}"
    )
    assert t.render([{"role": "user", "content": "a b", "items": "shadowed"}]) == "user:3:False:A_B;"
    t = ChatTemplate(
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + loop.index %}"
        "{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.nope is defined }}{% endfor %}|{{ ns.n }}{{ ns.zz is defined }}"
    )
    assert t.render([1, 2]) == "0TrueFalseFalse1FalseTrueFalse|3False"
    for src in ("{{ ''.__class__.__mro__ }}", "{{ messages[0].__class__.__subclasses__() }}", "{{ messages.clear() }}"):
        with pytest.raises(TemplateError):
            ChatTemplate(src).render([{"role": "user"}])
