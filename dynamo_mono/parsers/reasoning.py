"""Tag-delimited reasoning parsers (`<think>`, `[THINK]`, `◁think▷`, Granite phrases) and a pass-through."""

from __future__ import annotations

from typing import Any

from dynamo_mono.parsers.base import MAX_HOLD, ReasoningParser, partial_suffix

_WS = " \t\r\n"
_BEFORE, _INSIDE, _AFTER = 0, 1, 2


class PassThroughReasoningParser(ReasoningParser):
    """Everything is content (thinking disabled, or a model whose think tags should stay in content)."""

    passthrough = True

    def __init__(self, **_: Any) -> None:
        pass

    def feed(self, text: str) -> tuple[str, str]:
        return "", text

    def finish(self) -> tuple[str, str]:
        return "", ""


class TagReasoningParser(ReasoningParser):
    """One reasoning block between a start and an end marker at the start of the output.

    The start marker is recognised only before any other non-blank text (leading blanks before it
    are dropped); with `force` the output starts inside the block and an explicit start marker is
    optional (`strip_start`) or kept as text. After the end marker everything is content, untouched.
    """

    def __init__(
        self,
        starts: tuple[str, ...],
        ends: tuple[str, ...],
        *,
        force: bool = False,
        strip_start: bool = True,
        max_hold: int = MAX_HOLD,
    ) -> None:
        self.starts = starts
        self.ends = ends
        self.max_hold = max_hold
        self._end_firsts = "".join(sorted({m[0] for m in ends}))
        self._state = _INSIDE if force else _BEFORE
        # in forced mode an explicit start marker may still open the output: strip it once
        self._strip_pending = force and strip_start
        self._buf = ""

    def feed(self, text: str) -> tuple[str, str]:
        state = self._state
        if state == _AFTER:
            return "", text
        if state == _INSIDE and not self._buf and not self._strip_pending:
            for ch in self._end_firsts:
                if ch in text:
                    break
            else:
                return text, ""
        self._buf += text
        return self._run(False)

    def finish(self) -> tuple[str, str]:
        return self._run(True)

    def _run(self, eof: bool) -> tuple[str, str]:
        reasoning = ""
        content = ""
        if self._state == _BEFORE:
            buf = self._buf
            body = buf.lstrip(_WS)
            for m in self.starts:
                if body.startswith(m):
                    self._state = _INSIDE
                    self._buf = body[len(m):]
                    break
            else:
                if not eof and len(buf) <= self.max_hold and (
                    not body or any(m.startswith(body) for m in self.starts)
                ):
                    return "", ""  # blanks or a partial start marker: may still open a block
                self._state = _AFTER
                self.passthrough = True
                self._buf = ""
                return "", buf
        if self._state == _INSIDE and self._strip_pending:
            buf = self._buf
            body = buf.lstrip(_WS)
            for m in self.starts:
                if body.startswith(m):
                    self._buf = body[len(m):]
                    self._strip_pending = False
                    break
            else:
                if not eof and len(buf) <= self.max_hold and (
                    not body or any(m.startswith(body) for m in self.starts)
                ):
                    return "", ""
                self._strip_pending = False
        if self._state == _INSIDE:
            buf = self._buf
            cut = -1
            cut_len = 0
            for m in self.ends:
                i = buf.find(m)
                if i >= 0 and (cut < 0 or i < cut):
                    cut, cut_len = i, len(m)
            if cut >= 0:
                self._state = _AFTER
                self.passthrough = True
                self._buf = ""
                return buf[:cut], buf[cut + cut_len:]
            keep = 0 if eof else partial_suffix(buf, self.ends)
            if keep:
                reasoning, self._buf = buf[:-keep], buf[-keep:]
            else:
                reasoning, self._buf = buf, ""
        return reasoning, content


def _thinking_off(kw: dict[str, Any]) -> bool:
    return kw.get("enable_thinking") is False or kw.get("thinking") is False


def _tagged(starts: tuple[str, ...], ends: tuple[str, ...], force: bool = False, strip_start: bool = True):
    def factory(**kw: Any) -> ReasoningParser:
        if _thinking_off(kw):
            return PassThroughReasoningParser()
        return TagReasoningParser(
            starts, ends, force=force, strip_start=strip_start, max_hold=kw.get("max_hold", MAX_HOLD)
        )

    return factory


THINK = ("<think>",), ("</think>",)

basic = _tagged(*THINK)
qwen3 = _tagged(*THINK)
deepseek_r1 = _tagged(*THINK, force=True)  # the template opens <think> in the prompt
minimax_append_think = _tagged(*THINK, force=True, strip_start=False)  # MiniMax-M2 omits <think>
mistral = _tagged(("[THINK]",), ("[/THINK]",))
kimi = _tagged(("◁think▷",), ("◁/think▷",))
granite = _tagged(
    ("Here is my thought process:", "Here's my thought process:"),
    ("Here is my response:", "Here's my response:"),
)


def passthrough(**_: Any) -> ReasoningParser:
    """MiniMax-M2 style: keep `<think>…</think>` in the content (interleaved thinking)."""
    return PassThroughReasoningParser()
