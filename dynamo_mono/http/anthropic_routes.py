"""Anthropic Messages API routes: POST /v1/messages (JSON or SSE) and POST /v1/messages/count_tokens.

Content blocks are assembled from the chat pipeline's Steps in the order the model produced them:
thinking, text, tool_use. Whitespace-only text never opens a text block (the "\\n\\n" a model puts
after `</think>` or between tool calls is formatting), and a text block that follows another block
starts at its first non-whitespace character; a response that is only whitespace has no content.
Tool-call arguments that do not form a JSON object are returned as a text block instead of a
tool_use block (when streaming, this is decided by the arguments' first non-space character).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from typing import Any

import orjson
from aiohttp import web

from dynamo_mono.http.body import read_json, validate
from dynamo_mono.http.generate import serve_generation
from dynamo_mono.http.middleware import json_response
from dynamo_mono.http.sse import named_event
from dynamo_mono.http.state import STATE
from dynamo_mono.protocol.anthropic import (REQUEST_MODELS, RESPONSE_MODELS, ChatRequest, CountTokensRequest,
                                            MessagesRequest, to_chat_request)
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.chat import ChatPipeline, check_tool_choice
from dynamo_mono.serving.choice import Step
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import Prompt
from dynamo_mono.serving.params import GenParams

PING = named_event("ping", {"type": "ping"})
_SIGNING_KEY = secrets.token_bytes(32)  # per process: signatures are opaque and need not survive a restart
_ID_ALPHABET = string.ascii_letters + string.digits
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def thinking_signature(text: str) -> str:
    """The opaque `signature` of a thinking block: an HMAC of its text under a per-process key."""
    return base64.b64encode(hmac.new(_SIGNING_KEY, text.encode(), hashlib.sha256).digest()).decode()


def _tool_use_id() -> str:
    return "toolu_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _block_start(index: int, block: dict) -> bytes:
    return named_event("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": block})


def _block_delta(index: int, delta: dict) -> bytes:
    return named_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _block_stop(index: int) -> bytes:
    return named_event("content_block_stop", {"type": "content_block_stop", "index": index})


class BlockAssembler:
    """Turns one choice's Steps into Anthropic content blocks: SSE events when streaming, else a list."""

    __slots__ = ("stream", "omit_thinking", "single_call", "out", "content", "index", "kind", "_parts", "_mac",
                 "_ws", "_call_idx", "_call_name", "_call_id", "_pending", "_bad", "tool_uses")

    def __init__(self, *, stream: bool, omit_thinking: bool = False, single_tool_call: bool = False) -> None:
        self.stream = stream
        self.omit_thinking = omit_thinking
        self.single_call = single_tool_call
        self.out = bytearray()  # SSE bytes not yet written (streaming)
        self.content: list[dict] = []  # finished blocks (unary)
        self.index = -1  # index of the last opened block
        self.kind: str | None = None  # kind of the open block
        self._parts: list[str] = []  # text of the open block
        self._mac: Any = None  # running HMAC of the open thinking block
        self._ws = ""  # whitespace-only text held while no text block is open
        self._call_idx: int | None = None  # parser index of the current tool call
        self._call_name = ""
        self._call_id = ""
        self._pending: list[str] | None = None  # arguments of a call whose block is not open yet
        self._bad = False  # the pending call's arguments are not a JSON object
        self.tool_uses = 0

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data

    def add(self, step: Step) -> None:
        if step.reasoning:
            self._reasoning(step.reasoning)
        if step.content:
            self._text(step.content)
        for d in step.tool_calls:
            self._tool(d)

    def finish(self) -> None:
        self._finish_call()
        self._close()
        self._ws = ""

    # --- blocks ------------------------------------------------------------------------------
    def _open(self, kind: str, block: dict) -> None:
        self.index += 1
        self.kind = kind
        self._parts = []
        if self.stream:
            self.out += _block_start(self.index, block)

    def _close(self) -> None:
        kind = self.kind
        if kind is None:
            return
        text = "".join(self._parts) if not self.stream or kind == "tool_use" else ""
        if kind == "thinking":
            sig = base64.b64encode(self._mac.digest()).decode()
            self._mac = None
            if self.stream:
                self.out += _block_delta(self.index, {"type": "signature_delta", "signature": sig})
            else:
                self.content.append({"type": "thinking", "thinking": "" if self.omit_thinking else text,
                                     "signature": sig})
        elif kind == "text":
            if not self.stream:
                self.content.append({"type": "text", "text": text})
        elif kind == "tool_use":
            self._call_idx = None
            if not self.stream:
                self._tool_block(text)
        if self.stream:
            self.out += _block_stop(self.index)
        self.kind = None
        self._parts = []

    def _tool_block(self, args: str) -> None:
        try:
            value = orjson.loads(args) if args.strip() else {}
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            self.content.append({"type": "tool_use", "id": self._call_id, "name": self._call_name, "input": value})
        else:
            self.tool_uses -= 1
            self.content.append({"type": "text", "text": args})

    # --- content kinds -------------------------------------------------------------------------
    def _reasoning(self, text: str) -> None:
        self._finish_call()
        if self.kind != "thinking":
            self._close()
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            self._mac = hmac.new(_SIGNING_KEY, digestmod=hashlib.sha256)
        self._mac.update(text.encode())
        if self.stream:
            if not self.omit_thinking:
                self.out += _block_delta(self.index, {"type": "thinking_delta", "thinking": text})
        else:
            self._parts.append(text)

    def _text(self, text: str) -> None:
        if self.kind == "text":
            if self.stream:
                self.out += _block_delta(self.index, {"type": "text_delta", "text": text})
            else:
                self._parts.append(text)
            return
        text = self._ws + text
        if not text.strip():
            self._ws = text
            return
        self._ws = ""
        self._finish_call()
        if self.index >= 0:
            text = text.lstrip()
        self._close()
        self._open("text", {"type": "text", "text": ""})
        if self.stream:
            self.out += _block_delta(self.index, {"type": "text_delta", "text": text})
        else:
            self._parts.append(text)

    def _tool(self, d: Any) -> None:
        if self.single_call and d.index > 0:
            return
        if d.index != self._call_idx:
            self._finish_call()
            self._close()
            self._call_idx = d.index
            self._call_name = d.name or ""
            self._call_id = _tool_use_id()
            self._pending = []
            self._bad = False
        if self._pending is None:  # the tool_use block is open
            if d.arguments:
                if self.stream:
                    self.out += _block_delta(self.index, {"type": "input_json_delta", "partial_json": d.arguments})
                else:
                    self._parts.append(d.arguments)
            return
        self._pending.append(d.arguments)
        if self._bad:
            return
        head = "".join(self._pending).lstrip()
        if not head:
            return
        if head[0] != "{":
            self._bad = True
            return
        args = "".join(self._pending)
        self._pending = None
        self._open_tool()
        if self.stream:
            self.out += _block_delta(self.index, {"type": "input_json_delta", "partial_json": args})
        else:
            self._parts.append(args)

    def _open_tool(self) -> None:
        self.tool_uses += 1
        self._open("tool_use", {"type": "tool_use", "id": self._call_id, "name": self._call_name, "input": {}})

    def _finish_call(self) -> None:
        """Settle a call whose block never opened: no arguments → input {}, non-object → a text block."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._close()
        if self._bad:
            self._open("text", {"type": "text", "text": ""})
            text = "".join(pending)
            if self.stream:
                self.out += _block_delta(self.index, {"type": "text_delta", "text": text})
            else:
                self._parts.append(text)
        else:
            self._open_tool()
        self._close()
        self._call_idx = None


# --- request translation -------------------------------------------------------------------------
def _gen_params(req: MessagesRequest, chat: ChatRequest) -> GenParams:
    response_format = None
    fmt = (req.output_config or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}
    return GenParams(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k or None,
        stop=list(req.stop_sequences or []),
        tools=None if chat.tool_choice == "none" else chat.tools,
        tool_choice=chat.tool_choice,
        response_format=response_format,
    )


def _usage(gen: Generation) -> dict:
    """Anthropic counts prompt-cache reads apart from input_tokens (their sum is the prompt length)."""
    cached = min(gen.cached_tokens, gen.prompt_tokens)
    return {"input_tokens": gen.prompt_tokens - cached, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached, "output_tokens": gen.completion_tokens}


def _stop(gen: Generation, blocks: BlockAssembler) -> tuple[str, str | None]:
    st = gen.states[0]
    if isinstance(st.stop_reason, str):
        return "stop_sequence", st.stop_reason
    if blocks.tool_uses > 0 and st.finish_reason in ("stop", "tool_calls"):
        return "tool_use", None
    reason = _STOP_REASONS.get(st.finish_reason or "stop", "end_turn")
    return ("end_turn" if reason == "tool_use" else reason), None


async def _prompt(pipeline: ChatPipeline, model: Any, chat: ChatRequest) -> Prompt:
    return await pipeline.prompt_for(model, chat.messages, tools=chat.tools,
                                     add_generation_prompt=not chat.continue_final,
                                     continue_final_message=chat.continue_final,
                                     template_kwargs=chat.template_kwargs or None)


# --- handlers ------------------------------------------------------------------------------------
async def create_message(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = validate(MessagesRequest, await read_json(request))
    chat = to_chat_request(req)
    model = state.model(req.model, kind="chat")
    params = _gen_params(req, chat)
    check_tool_choice(chat.tools, chat.tool_choice)
    pipeline = ChatPipeline(state)
    pipeline.check(params, len(chat.messages), model)
    mid = "msg_" + request["request_id"]
    build = _generation(pipeline, model, chat, params, mid)
    blocks = BlockAssembler(stream=req.stream, omit_thinking=chat.omit_thinking,
                            single_tool_call=chat.single_tool_call)
    encoder = (MessageStream(blocks, mid, req.model) if req.stream
               else MessageUnary(blocks, mid, req.model, request["request_id"]))
    return await serve_generation(request, state, model, endpoint="messages", stream=req.stream, build=build,
                                  encoder=encoder)


async def _generation(pipeline: ChatPipeline, model: Any, chat: ChatRequest, params: GenParams,
                      mid: str) -> Generation:
    prompt = await _prompt(pipeline, model, chat)
    return pipeline.generation(model, prompt, params, mid, template_kwargs=chat.template_kwargs or None)


class MessageUnary:
    """Collects steps into one `message` object."""

    __slots__ = ("blocks", "mid", "model", "request_id")

    def __init__(self, blocks: BlockAssembler, mid: str, model: str, request_id: str) -> None:
        self.blocks, self.mid, self.model, self.request_id = blocks, mid, model, request_id

    def open(self, gen: Generation) -> None:
        pass

    def step(self, step: Step) -> None:
        self.blocks.add(step)

    def response(self, gen: Generation) -> web.Response:
        blocks = self.blocks
        blocks.finish()
        stop_reason, stop_sequence = _stop(gen, blocks)
        return json_response({"id": self.mid, "type": "message", "role": "assistant", "content": blocks.content,
                              "model": self.model, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                              "usage": _usage(gen)}, headers={"request-id": self.request_id})


class MessageStream:
    """Steps as Messages API events: message_start, content blocks, message_delta, message_stop; `ping` until
    the first token."""

    __slots__ = ("blocks", "mid", "model")
    ping = PING

    def __init__(self, blocks: BlockAssembler, mid: str, model: str) -> None:
        self.blocks, self.mid, self.model = blocks, mid, model

    def open(self, gen: Generation) -> bytes:
        start = {"type": "message_start", "message": {
            "id": self.mid, "type": "message", "role": "assistant", "content": [], "model": self.model,
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": gen.prompt_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0}}}
        return named_event("message_start", start) + PING

    def step(self, step: Step) -> bytes:
        blocks = self.blocks
        blocks.add(step)
        return blocks.take() if blocks.out else b""

    def close(self, gen: Generation) -> bytes:
        blocks = self.blocks
        blocks.finish()
        stop_reason, stop_sequence = _stop(gen, blocks)
        return blocks.take() + named_event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": _usage(gen)}) + named_event("message_stop", {"type": "message_stop"})

    def error(self, err: ApiError) -> bytes:
        return named_event("error", err.anthropic_body())


async def count_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = validate(CountTokensRequest, await read_json(request))
    chat = to_chat_request(req)
    model = state.model(req.model, kind="chat")
    check_tool_choice(chat.tools, chat.tool_choice)
    pipeline = ChatPipeline(state)
    pipeline.check(GenParams(), len(chat.messages), model)
    prompt = await _prompt(pipeline, model, chat)
    return json_response({"input_tokens": len(prompt.token_ids)}, headers={"request-id": request["request_id"]})


_schemas_registered = False


def _register_schemas() -> None:
    global _schemas_registered
    if _schemas_registered:
        return
    from dynamo_mono.http.openapi import register_schema

    for m in REQUEST_MODELS:
        register_schema(m)
    for m in RESPONSE_MODELS:
        register_schema(m, mode="serialization")
    _schemas_registered = True


def add_routes(app: web.Application) -> None:
    """Mount the Anthropic Messages API (enabled unless --no-anthropic-api)."""
    app.router.add_post("/v1/messages", create_message)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    _register_schemas()
