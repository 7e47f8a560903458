"""Registers the built-in reasoning and tool-call parsers through the ordinary plugin hook."""

from __future__ import annotations

from typing import Callable

from dynamo_mono.hookspecs import hookimpl
from dynamo_mono.parsers import harmony_reasoning, reasoning, tools_json, tools_pythonic, tools_xml

REASONING = {
    "basic": reasoning.basic,
    "deepseek_r1": reasoning.deepseek_r1,
    "qwen3": reasoning.qwen3,
    "glm45": reasoning.basic,
    "minimax_append_think": reasoning.minimax_append_think,
    "minimax": reasoning.passthrough,
    "gpt_oss": harmony_reasoning.gpt_oss,
    "granite": reasoning.granite,
    "mistral": reasoning.mistral,
    "kimi": reasoning.kimi,
}

TOOL_CALL = {
    "hermes": tools_json.hermes,
    "llama3_json": tools_json.llama3_json,
    "mistral": tools_json.mistral,
    "pythonic": tools_pythonic.pythonic,
    "qwen3_coder": tools_xml.qwen3_coder,
    "deepseek_v3": tools_json.deepseek_v3,
    "minimax_m2": tools_xml.minimax_m2,
    "harmony": tools_json.harmony,
    "kimi_k2": tools_json.kimi_k2,
    "glm45": tools_xml.glm45,
}


@hookimpl
def register_parsers(register: Callable[..., None]) -> None:
    for name, factory in REASONING.items():
        register("reasoning", name, factory)
    for name, factory in TOOL_CALL.items():
        register("tool_call", name, factory)
