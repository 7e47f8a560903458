"""gpt-oss (harmony) reasoning parser: analysis channel is reasoning, final channel is content."""

from __future__ import annotations

import re
from typing import Any

from dynamo_mono.parsers.base import MAX_HOLD, ReasoningParser
from dynamo_mono.parsers.incremental import Gen, StreamToolParser

_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_ENDS = ("<|end|>", "<|return|>", "<|call|>")
_NEXT = ("<|start|>", "<|channel|>")  # a message also ends where the next one begins


class _HarmonyChannels(StreamToolParser):
    """Routes each harmony message body by its header; messages to a recipient (tool calls) pass
    through raw as content so the harmony tool parser after it can read them."""

    markers = ("<|start|>", "<|channel|>")

    def __init__(self, max_hold: int) -> None:
        super().__init__(None, max_hold=max_hold)
        self.reasoning: list[str] = []

    def region(self) -> Gen:
        header, _ = yield from self._until("<|message|>")
        header = self.marker + header
        if "to=" in header:
            self._content.append(header + "<|message|>")
            self._emitted = True
            self._commit = self._pos
            hit = yield from self._content_until(*_ENDS, *_NEXT)
            if hit in _NEXT:
                self._pos -= len(hit)
            elif hit:
                self._content.append(hit)
            return
        m = _CHANNEL.search(header)
        sink = self.reasoning if m is not None and m.group(1) == "analysis" else None
        hit = yield from self._content_until(*_ENDS, *_NEXT, sink=sink)
        if hit in _NEXT:
            self._pos -= len(hit)


class GptOssReasoningParser(ReasoningParser):
    """Harmony format: `<|channel|>analysis<|message|>…<|end|>` reasoning, `<|channel|>final<|message|>…` content."""

    def __init__(self, max_hold: int = MAX_HOLD) -> None:
        self._p = _HarmonyChannels(max_hold)

    def feed(self, text: str) -> tuple[str, str]:
        p = self._p
        if p.idle and "<" not in text:  # no harmony token can start here
            return "", text
        content, _ = p.feed(text)
        return self._reasoning(), content

    def finish(self) -> tuple[str, str]:
        content, _ = self._p.finish()
        return self._reasoning(), content

    def _reasoning(self) -> str:
        r = self._p.reasoning
        if not r:
            return ""
        out = "".join(r)
        r.clear()
        return out


def gpt_oss(**kw: Any) -> ReasoningParser:
    return GptOssReasoningParser(kw.get("max_hold", MAX_HOLD))
