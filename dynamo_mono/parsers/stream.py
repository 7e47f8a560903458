"""OutputParser: reasoning split first, then tool-call parsing of the content, streamed or whole."""

from __future__ import annotations

from typing import Any

from dynamo_mono.parsers.base import ParsedDelta, ReasoningParser, ToolCallDelta, ToolCallParser


class OutputParser:
    """Runs a reasoning parser and a tool-call parser over streamed model text."""

    __slots__ = ("reasoning", "tools")

    def __init__(self, reasoning: ReasoningParser | None, tools: ToolCallParser | None) -> None:
        self.reasoning = reasoning
        self.tools = tools

    @property
    def inert(self) -> bool:
        """True while every chunk is plain content (reasoning over or absent, no tool parsing): the caller may
        route text as content without feed(); finish() is still due at the end."""
        rp = self.reasoning
        return self.tools is None and (rp is None or rp.passthrough)

    def feed(self, text: str) -> ParsedDelta:
        rp = self.reasoning
        if rp is None or rp.passthrough:
            r, c = "", text
        else:
            r, c = rp.feed(text)
        tp = self.tools
        if tp is not None and c:
            if tp.idle:
                for ch in tp.firsts:
                    if ch in c:
                        break
                else:
                    return ParsedDelta(r, c, [])
            c, calls = tp.feed(c)
            return ParsedDelta(r, c, calls)
        return ParsedDelta(r, c, [])

    def finish(self) -> ParsedDelta:
        if self.reasoning is not None:
            r, c = self.reasoning.finish()
        else:
            r, c = "", ""
        if self.tools is None:
            return ParsedDelta(r, c)
        calls: list[ToolCallDelta] = []
        if c:
            c, calls = self.tools.feed(c)
        c2, calls2 = self.tools.finish()
        return ParsedDelta(r, c + c2, calls + calls2)

    def parse_complete(self, text: str) -> tuple[str, str, list[dict]]:
        """Non-streaming parse of a whole output: (reasoning, content, OpenAI tool_calls list)."""
        return merge([self.feed(text), self.finish()])


def merge(deltas: list[ParsedDelta]) -> tuple[str, str, list[dict]]:
    """Merge streamed deltas the way a client does: concatenated text, calls assembled by index."""
    reasoning: list[str] = []
    content: list[str] = []
    calls: dict[int, dict] = {}
    for d in deltas:
        if d.reasoning:
            reasoning.append(d.reasoning)
        if d.content:
            content.append(d.content)
        for tc in d.tool_calls:
            call = calls.get(tc.index)
            if call is None:
                call = calls[tc.index] = {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name or "", "arguments": ""},
                }
            call["function"]["arguments"] += tc.arguments
    return "".join(reasoning), "".join(content), [calls[i] for i in sorted(calls)]


class _NamedOnly(ToolCallParser):
    """tool_choice names one function: only that function's calls are returned, re-indexed from 0."""

    def __init__(self, inner: ToolCallParser, name: str) -> None:
        self.inner = inner
        self.name = name
        self._map: dict[int, int] = {}  # inner index -> outer index, for kept calls
        self._seen: set[int] = set()

    def _filter(self, out: tuple[str, list[ToolCallDelta]]) -> tuple[str, list[ToolCallDelta]]:
        content, calls = out
        if not calls:
            return out
        kept = []
        for d in calls:
            if d.index not in self._seen:
                self._seen.add(d.index)
                if d.name == self.name:
                    self._map[d.index] = len(self._map)
            idx = self._map.get(d.index)
            if idx is not None:
                d.index = idx
                kept.append(d)
        return content, kept

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        return self._filter(self.inner.feed(text))

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        return self._filter(self.inner.finish())


def _named_choice(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
        if isinstance(tool_choice.get("name"), str):  # Responses-API style {"type": "function", "name": …}
            return tool_choice["name"]
    return None


def build_output_parser(
    reasoning_name: str | None,
    tool_name: str | None,
    *,
    tools: list[dict] | None = None,
    tool_choice: Any = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    registry: Any = None,
) -> OutputParser | None:
    """The parser a request needs, or None when its output needs no parsing (the fast path).

    tool_choice "none" (or no tools in the request) turns tool parsing off; "auto", "required"
    and a named function turn it on, a named function keeping only that function's calls.
    Unknown parser names raise LookupError from the registry.
    """
    if registry is None:
        from dynamo_mono.plugins import get_plugins

        registry = get_plugins()
    reasoning: ReasoningParser | None = None
    if reasoning_name:
        kw = {}
        for key in ("enable_thinking", "thinking"):
            if chat_template_kwargs and isinstance(chat_template_kwargs.get(key), bool):
                kw[key] = chat_template_kwargs[key]
        reasoning = registry.get("reasoning_parser", reasoning_name).factory(**kw)
    tool_parser: ToolCallParser | None = None
    choice = tool_choice.get("type") if isinstance(tool_choice, dict) else tool_choice
    if tool_name and tools and choice != "none":
        tool_parser = registry.get("tool_call_parser", tool_name).factory(tools)
        named = _named_choice(tool_choice)
        if named is not None:
            tool_parser = _NamedOnly(tool_parser, named)
    if reasoning is None and tool_parser is None:
        return None
    return OutputParser(reasoning, tool_parser)
