"""Reasoning and tool-call output parsers: model text in, OpenAI structured fields out."""

from dynamo_mono.parsers.base import ParsedDelta, ReasoningParser, ToolCallDelta, ToolCallParser
from dynamo_mono.parsers.stream import OutputParser, build_output_parser

__all__ = [
    "OutputParser",
    "ParsedDelta",
    "ReasoningParser",
    "ToolCallDelta",
    "ToolCallParser",
    "build_output_parser",
]
