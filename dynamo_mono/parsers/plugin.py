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

# Parser classes are their own factories: cls(tools, *, max_hold=...).
TOOL_CALL = {
    "hermes": tools_json.HermesToolParser,
    "llama3_json": tools_json.Llama3JsonToolParser,
    "mistral": tools_json.MistralToolParser,
    "pythonic": tools_pythonic.PythonicToolParser,
    "qwen3_coder": tools_xml.Qwen3CoderToolParser,
    "deepseek_v3": tools_json.DeepSeekV3ToolParser,
    "minimax_m2": tools_xml.MiniMaxM2ToolParser,
    "harmony": tools_json.HarmonyToolParser,
    "kimi_k2": tools_json.KimiK2ToolParser,
    "glm45": tools_xml.Glm45ToolParser,
}


@hookimpl
def register_parsers(register: Callable[..., None]) -> None:
    for name, factory in REASONING.items():
        register("reasoning", name, factory)
    for name, factory in TOOL_CALL.items():
        register("tool_call", name, factory)
