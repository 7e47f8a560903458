"""A reasoning parser for models that think inside `[[` … `]]`."""

from __future__ import annotations

from dynamo_mono.api import ReasoningParser


class BracketReasoningParser(ReasoningParser):
    """Text inside `[[ ]]` is reasoning; everything else is content. Streaming-safe across chunk splits."""

    START, END = "[[", "]]"

    def __init__(self, **kwargs) -> None:
        self.inside = False
        self.held = ""

    def feed(self, text: str) -> tuple[str, str]:
        buf = self.held + text
        self.held = ""
        reasoning, content = [], []
        while buf:
            tag = self.END if self.inside else self.START
            idx = buf.find(tag)
            if idx >= 0:
                (reasoning if self.inside else content).append(buf[:idx])
                buf = buf[idx + len(tag):]
                self.inside = not self.inside
                continue
            # keep a trailing partial tag for the next chunk
            keep = 1 if buf.endswith(tag[0]) else 0
            (reasoning if self.inside else content).append(buf[: len(buf) - keep])
            self.held = buf[len(buf) - keep:]
            break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        held, self.held = self.held, ""
        return (held, "") if self.inside else ("", held)
