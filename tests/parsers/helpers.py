"""Helpers for parser tests: stream a text in given pieces and merge the result like a client."""

from __future__ import annotations

import json

from dynamo_mono.parsers.plugin import REASONING, TOOL_CALL
from dynamo_mono.parsers.stream import OutputParser, merge

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "metric": {"type": "boolean"},
                    "hours": {"type": "array"},
                },
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def make(reasoning: str | None = None, tool: str | None = None, **kw) -> OutputParser:
    r = REASONING[reasoning](**kw) if reasoning else None
    t = TOOL_CALL[tool](TOOLS) if tool else None
    return OutputParser(r, t)


def stream(parser: OutputParser, pieces: list[str]):
    deltas = [parser.feed(p) for p in pieces]
    deltas.append(parser.finish())
    return deltas


def streamed(parser: OutputParser, pieces: list[str]):
    """(reasoning, content, [(name, arguments)]) merged from a streamed run; checks the id rule."""
    deltas = stream(parser, pieces)
    firsts: dict[int, int] = {}
    for d in deltas:
        for tc in d.tool_calls:
            if tc.id is not None:
                assert tc.name, "id and name come together on a call's first delta"
                assert tc.id.startswith("call_") and len(tc.id) == 29 and tc.id[5:].isalnum()
                firsts[tc.index] = firsts.get(tc.index, 0) + 1
            else:
                assert tc.name is None
                assert tc.index in firsts, "argument fragment before the call's first delta"
    assert all(v == 1 for v in firsts.values())
    return strip_ids(merge(deltas))


def strip_ids(result):
    reasoning, content, calls = result
    return reasoning, content, [(c["function"]["name"], c["function"]["arguments"]) for c in calls]


def complete(parser: OutputParser, text: str):
    return strip_ids(parser.parse_complete(text))


def split_at(text: str, cuts: list[int]) -> list[str]:
    cuts = sorted({c for c in cuts if 0 < c < len(text)})
    out, prev = [], 0
    for c in cuts:
        out.append(text[prev:c])
        prev = c
    out.append(text[prev:])
    return out


def loads_calls(calls):
    return [(n, json.loads(a)) for n, a in calls]
