"""Parser data types and base classes shared by every reasoning and tool-call parser."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

MAX_HOLD = 64 * 1024  # default bound on text held back while it may still become a tag or call

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """An OpenAI-style tool call id: `call_` + 24 random alphanumerics."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(slots=True)
class ToolCallDelta:
    """One streamed piece of a tool call; id and name are set on the first delta of a call only."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class ParsedDelta:
    """What one chunk of model text became: reasoning text, content text and tool-call pieces."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)


class ReasoningParser:
    """Splits model text into reasoning and content; feed() per chunk, finish() once at the end."""

    # True once every further chunk is plain content: OutputParser then skips feed() (hot path)
    passthrough: bool = False

    def feed(self, text: str) -> tuple[str, str]:
        """Return (reasoning delta, content delta) for a chunk of model text."""
        raise NotImplementedError

    def finish(self) -> tuple[str, str]:
        """Flush held-back text at end of stream."""
        raise NotImplementedError


class ToolCallParser:
    """Finds tool calls in content text; feed() per chunk, finish() once at the end."""

    # Hot-path hint: while `idle`, a chunk containing none of the characters in `firsts` is plain
    # content and OutputParser need not call feed(). Parsers that do not keep these up to date
    # leave idle False.
    idle: bool = False
    firsts: str = ""

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Return (content delta, tool-call deltas) for a chunk of content text."""
        raise NotImplementedError

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """Flush held-back text and close what can be closed at end of stream."""
        raise NotImplementedError


def partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that is a proper prefix of one of the markers (0 if none)."""
    best = 0
    n = len(text)
    for m in markers:
        k = min(len(m) - 1, n)
        while k > best:
            if text.endswith(m[:k]):
                best = k
                break
            k -= 1
    return best
