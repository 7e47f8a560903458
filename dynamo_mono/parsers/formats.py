"""The inverse of the parsers: model-like text for given reasoning / tool calls (used by the mocker)."""

from __future__ import annotations

import json
from typing import Any


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def format_reasoning(parser: str, reasoning: str, content: str) -> str:
    """Text a model served with reasoning parser `parser` would emit for this reasoning and content."""
    if parser in ("basic", "qwen3", "glm45", "minimax"):
        return f"<think>{reasoning}</think>{content}"
    if parser in ("deepseek_r1", "minimax_append_think"):
        return f"{reasoning}</think>{content}"  # the opening tag is part of the prompt
    if parser == "gpt_oss":
        return (
            f"<|channel|>analysis<|message|>{reasoning}<|end|>"
            f"<|start|>assistant<|channel|>final<|message|>{content}<|return|>"
        )
    if parser == "granite":
        return f"Here is my thought process:{reasoning}Here is my response:{content}"
    if parser == "mistral":
        return f"[THINK]{reasoning}[/THINK]{content}"
    if parser == "kimi":
        return f"◁think▷{reasoning}◁/think▷{content}"
    raise ValueError(f"unknown reasoning parser {parser!r}")


def _xml_value(value: Any) -> str:
    return value if isinstance(value, str) else _j(value)


def format_tool_calls(parser: str, calls: list[tuple[str, dict]], content: str = "") -> str:
    """Text a model served with tool parser `parser` would emit: `content` followed by the calls."""
    if parser == "hermes":
        return content + "".join(
            f'<tool_call>\n{{"name": {_j(n)}, "arguments": {_j(a)}}}\n</tool_call>' for n, a in calls
        )
    if parser == "llama3_json":
        body = "; ".join(f'{{"name": {_j(n)}, "parameters": {_j(a)}}}' for n, a in calls)
        return f"{content}<|python_tag|>{body}" if content else body
    if parser == "mistral":
        return content + "".join(f"[TOOL_CALLS]{n}[ARGS]{_j(a)}" for n, a in calls)
    if parser == "pythonic":
        body = "[" + ", ".join(
            f"{n}(" + ", ".join(f"{k}={v!r}" for k, v in a.items()) + ")" for n, a in calls
        ) + "]"
        return f"{content}<|python_start|>{body}<|python_end|>" if content else body
    if parser == "qwen3_coder":
        return content + "".join(
            f"<tool_call>\n<function={n}>\n"
            + "".join(f"<parameter={k}>\n{_xml_value(v)}\n</parameter>\n" for k, v in a.items())
            + "</function>\n</tool_call>"
            for n, a in calls
        )
    if parser == "deepseek_v3":
        return (
            content
            + "<｜tool▁calls▁begin｜>"
            + "\n".join(
                f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{_j(a)}\n```<｜tool▁call▁end｜>"
                for n, a in calls
            )
            + "<｜tool▁calls▁end｜>"
        )
    if parser == "minimax_m2":
        return (
            content
            + "<minimax:tool_call>\n"
            + "".join(
                f'<invoke name="{n}">\n'
                + "".join(f'<parameter name="{k}">{_xml_value(v)}</parameter>\n' for k, v in a.items())
                + "</invoke>\n"
                for n, a in calls
            )
            + "</minimax:tool_call>"
        )
    if parser == "harmony":
        final = f"<|channel|>final<|message|>{content}<|end|>" if content else ""
        return final + "".join(
            f"<|start|>assistant<|channel|>commentary to=functions.{n} <|constrain|>json<|message|>{_j(a)}<|call|>"
            for n, a in calls
        )
    if parser == "kimi_k2":
        return (
            content
            + "<|tool_calls_section_begin|>"
            + "".join(
                f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{_j(a)}<|tool_call_end|>"
                for i, (n, a) in enumerate(calls)
            )
            + "<|tool_calls_section_end|>"
        )
    if parser == "glm45":
        return content + "".join(
            f"<tool_call>{n}\n"
            + "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{_xml_value(v)}</arg_value>\n" for k, v in a.items())
            + "</tool_call>"
            for n, a in calls
        )
    raise ValueError(f"unknown tool call parser {parser!r}")
