"""Responses API output: one choice's Steps become output items (reasoning, message, function_call) and, when
streaming, OpenAI's events for them, each with the next `sequence_number`.

Items follow the order the model produced them. Whitespace-only text never opens a message item (the "\\n\\n" a
model writes after `</think>` or between tool calls is formatting), and a message that follows another item
starts at its first non-whitespace character.

Reasoning tokens: a step's tokens count as reasoning when the step produced only reasoning text, are split by
characters when it produced both, and tokens that produced no text yet (tags, held-back text) count with the
visible output before them (with the one after them at the start).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from dynamo_mono.parsers.base import new_call_id
from dynamo_mono.serving.choice import Step


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


class OutputAssembler:
    """Steps → Responses output items; with `stream`, the SSE events as well (`take()` the pending bytes)."""

    __slots__ = ("stream", "single_call", "seq", "out", "done", "kind", "index", "item_id", "_parts", "_ws",
                 "_call_idx", "_call_id", "_call_name", "_text_pre", "reasoning_tokens", "_pending_tokens",
                 "_last_reasoning")

    def __init__(self, *, stream: bool, single_tool_call: bool = False) -> None:
        self.stream = stream
        self.single_call = single_tool_call  # parallel_tool_calls=false: the first call only
        self.seq = 0  # next sequence_number
        self.out = bytearray()  # SSE bytes not yet written
        self.done: list[dict] = []  # finished items
        self.kind: str | None = None  # type of the open item
        self.index = -1  # output_index of the open (or last) item
        self.item_id = ""
        self._parts: list[str] = []  # text (or arguments) of the open item
        self._ws = ""  # whitespace-only text held while no message is open
        self._call_idx: int | None = None
        self._call_id = ""
        self._call_name = ""
        self._text_pre = b""  # constant head of the open message's output_text.delta event
        self.reasoning_tokens = 0
        self._pending_tokens = 0
        self._last_reasoning: bool | None = None

    # --- events -------------------------------------------------------------------------------
    def event(self, name: str, payload: dict) -> bytes:
        """One SSE event `name` with the next sequence number (queued on `out` too when streaming)."""
        data = b"event: " + name.encode() + b"\ndata: " + orjson.dumps(
            {"type": name, **payload, "sequence_number": self.seq}) + b"\n\n"
        self.seq += 1
        return data

    def _emit(self, name: str, payload: dict) -> None:
        if self.stream:
            self.out += self.event(name, payload)

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    # --- items ----------------------------------------------------------------------------------
    def items(self) -> list[dict]:
        """The output so far: finished items, then the open one as it stands (status in_progress)."""
        if self.kind is None:
            return list(self.done)
        return [*self.done, self._item("in_progress")]

    def _item(self, status: str) -> dict:
        text = "".join(self._parts)
        if self.kind == "message":
            return {"id": self.item_id, "type": "message", "role": "assistant", "status": status,
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
        if self.kind == "reasoning":
            return {"id": self.item_id, "type": "reasoning", "status": status, "summary": [],
                    "content": [{"type": "reasoning_text", "text": text}]}
        return {"id": self.item_id, "type": "function_call", "status": status, "call_id": self._call_id,
                "name": self._call_name, "arguments": text}

    def add(self, step: Step) -> None:
        self._count(step)
        if step.reasoning:
            self._reasoning(step.reasoning)
        if step.content:
            self._text(step.content)
        for d in step.tool_calls:
            self._tool(d)

    def stream_step(self, step: Step) -> bytes:
        """add() and take(); the common step (more text of the open message) is one event built directly."""
        text = step.content
        if self.kind == "message" and text and not step.reasoning and not step.tool_calls:
            self._count(step)
            self._parts.append(text)
            data = self._text_pre + orjson.dumps(text) + b',"sequence_number":%d}\n\n' % self.seq
            self.seq += 1
            return data
        self.add(step)
        return self.take() if self.out else b""

    def finish(self, status: str = "completed") -> None:
        """Close the open item with `status` (completed, or incomplete when the output was cut)."""
        self._close(status)
        self._ws = ""
        if self._last_reasoning:
            self.reasoning_tokens += self._pending_tokens
        self._pending_tokens = 0

    def _count(self, step: Step) -> None:
        n = step.num_tokens
        r, other = len(step.reasoning), len(step.content)
        if step.tool_calls:
            other += sum(len(d.arguments) + 1 for d in step.tool_calls)
        if not r and not other:
            self._pending_tokens += n
            return
        reasoning = n if not other else (n * r) // (r + other)
        if self._pending_tokens and (self._last_reasoning or (self._last_reasoning is None and r)):
            reasoning += self._pending_tokens
        self._pending_tokens = 0
        self.reasoning_tokens += reasoning
        self._last_reasoning = not other

    def _open(self, kind: str, item_id: str) -> None:
        self.kind = kind
        self.index += 1
        self.item_id = item_id
        self._parts = []
        item = self._item("in_progress")
        if kind != "function_call":
            item["content"] = []  # its part arrives with content_part.added
        self._emit("response.output_item.added", {"output_index": self.index, "item": item})
        if kind == "message":
            self._emit("response.content_part.added", {"item_id": item_id, "output_index": self.index,
                                                       "content_index": 0,
                                                       "part": {"type": "output_text", "text": "", "annotations": []}})
            self._text_pre = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
                              b'"item_id":"%b","output_index":%d,"content_index":0,"logprobs":[],"delta":'
                              % (item_id.encode(), self.index))
        elif kind == "reasoning":
            self._emit("response.content_part.added", {"item_id": item_id, "output_index": self.index,
                                                       "content_index": 0,
                                                       "part": {"type": "reasoning_text", "text": ""}})

    def _close(self, status: str = "completed") -> None:
        kind = self.kind
        if kind is None:
            return
        item = self._item(status)
        where = {"item_id": self.item_id, "output_index": self.index}
        if kind == "message":
            part = item["content"][0]
            self._emit("response.output_text.done", {**where, "content_index": 0, "text": part["text"],
                                                     "logprobs": []})
            self._emit("response.content_part.done", {**where, "content_index": 0, "part": part})
        elif kind == "reasoning":
            part = item["content"][0]
            self._emit("response.reasoning_text.done", {**where, "content_index": 0, "text": part["text"]})
            self._emit("response.content_part.done", {**where, "content_index": 0, "part": part})
        else:
            self._emit("response.function_call_arguments.done", {**where, "name": item["name"],
                                                                 "arguments": item["arguments"]})
            self._call_idx = None
        self._emit("response.output_item.done", {"output_index": self.index, "item": item})
        self.done.append(item)
        self.kind = None
        self._parts = []

    # --- content kinds --------------------------------------------------------------------------
    def _reasoning(self, text: str) -> None:
        if self.kind != "reasoning":
            self._close()
            self._open("reasoning", new_id("rs_"))
        self._parts.append(text)
        self._emit("response.reasoning_text.delta", {"item_id": self.item_id, "output_index": self.index,
                                                     "content_index": 0, "delta": text})

    def _text(self, text: str) -> None:
        if self.kind != "message":
            text = self._ws + text
            if not text.strip():
                self._ws = text
                return
            self._ws = ""
            if self.index >= 0:
                text = text.lstrip()
            self._close()
            self._open("message", new_id("msg_"))
        self._parts.append(text)
        if self.stream:
            self.out += self._text_pre + orjson.dumps(text) + b',"sequence_number":%d}\n\n' % self.seq
            self.seq += 1

    def _tool(self, d: Any) -> None:
        if self.single_call and d.index > 0:
            return
        if d.index != self._call_idx or self.kind != "function_call":
            self._close()
            self._ws = ""
            self._call_idx = d.index
            self._call_id = d.id or new_call_id()
            self._call_name = d.name or ""
            self._open("function_call", new_id("fc_"))
        if d.arguments:
            self._parts.append(d.arguments)
            self._emit("response.function_call_arguments.delta", {"item_id": self.item_id,
                                                                  "output_index": self.index,
                                                                  "delta": d.arguments})
