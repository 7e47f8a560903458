"""Anthropic Messages API: request models, their translation to chat-template messages, response shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.media.parts import MediaPart

MIN_THINKING_BUDGET = 1024  # Anthropic's documented lower bound for thinking.budget_tokens


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Content blocks and tools tolerate fields we do not act on (cache_control, citations, ...)."""

    model_config = ConfigDict(extra="allow")


# --- request content blocks --------------------------------------------------------------------
class TextBlockParam(_Open):
    type: Literal["text"]
    text: str


class ImageBlockParam(_Open):
    type: Literal["image"]
    source: dict[str, Any]


class DocumentBlockParam(_Open):
    type: Literal["document"]
    source: dict[str, Any]


class ToolUseBlockParam(_Open):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlockParam(_Open):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[Union[TextBlockParam, ImageBlockParam, DocumentBlockParam],
                                  Field(discriminator="type")]] | None = None
    is_error: StrictBool | None = None


class ThinkingBlockParam(_Open):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlockParam(_Open):
    type: Literal["redacted_thinking"]
    data: str


ContentBlockParam = Annotated[
    Union[TextBlockParam, ImageBlockParam, DocumentBlockParam, ToolUseBlockParam, ToolResultBlockParam,
          ThinkingBlockParam, RedactedThinkingBlockParam],
    Field(discriminator="type"),
]


class InputMessageParam(_Strict):
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlockParam]


# --- tools, tool choice, thinking ---------------------------------------------------------------
class ToolParam(_Open):
    """A client tool. Server tools (web search, bash, ...) carry a versioned `type` and are refused."""

    type: Literal["custom"] | None = None
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceAutoParam(_Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceAnyParam(_Strict):
    type: Literal["any"]
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceToolParam(_Strict):
    type: Literal["tool"]
    name: str = Field(min_length=1)
    disable_parallel_tool_use: StrictBool | None = None


class ToolChoiceNoneParam(_Strict):
    type: Literal["none"]


ToolChoiceParam = Annotated[
    Union[ToolChoiceAutoParam, ToolChoiceAnyParam, ToolChoiceToolParam, ToolChoiceNoneParam],
    Field(discriminator="type"),
]


class ThinkingConfigEnabledParam(_Strict):
    type: Literal["enabled"]
    budget_tokens: StrictInt = Field(ge=MIN_THINKING_BUDGET)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingConfigAdaptiveParam(_Strict):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingConfigBetweenToolsParam(_Strict):
    type: Literal["between_tools"]


class ThinkingConfigDisabledParam(_Strict):
    type: Literal["disabled"]


ThinkingConfigParam = Annotated[
    Union[ThinkingConfigEnabledParam, ThinkingConfigAdaptiveParam, ThinkingConfigBetweenToolsParam,
          ThinkingConfigDisabledParam],
    Field(discriminator="type"),
]


class MetadataParam(_Strict):
    user_id: str | None = None


# --- request bodies -------------------------------------------------------------------------------
class _MessagesBase(_Strict):
    """Fields shared by /v1/messages and /v1/messages/count_tokens."""

    model: str = Field(min_length=1)
    messages: list[InputMessageParam] = Field(min_length=1)
    system: str | list[TextBlockParam] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingConfigParam | None = None
    # Accepted so SDK calls that send them work; they do not change what we generate.
    cache_control: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None


class MessagesRequest(_MessagesBase):
    """POST /v1/messages body."""

    max_tokens: StrictInt = Field(ge=1)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(default=None, ge=0)
    metadata: MetadataParam | None = None
    stream: StrictBool = False
    service_tier: Literal["auto", "standard_only"] | None = None
    container: str | dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    inference_geo: str | None = None

    __openapi_paths__ = {
        "/v1/messages": {"post": {
            "operationId": "createMessage", "summary": "Anthropic Messages API (JSON or SSE stream)",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/MessagesRequest"}}}},
            "responses": {
                "200": {"description": "A message, or an SSE stream of message events when stream=true",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AnthropicMessage"}},
                                    "text/event-stream": {"schema": {"type": "string"}}}},
                **{str(c): {"description": "Error", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/AnthropicErrorResponse"}}}}
                   for c in (400, 401, 404, 413, 415, 429, 500, 503)}}}},
        "/v1/messages/count_tokens": {"post": {
            "operationId": "countMessageTokens", "summary": "Count the input tokens of a Messages request",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CountTokensRequest"}}}},
            "responses": {
                "200": {"description": "Token count", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CountTokensResponse"}}}},
                **{str(c): {"description": "Error", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/AnthropicErrorResponse"}}}}
                   for c in (400, 401, 404, 413, 415)}}}},
    }


class CountTokensRequest(_MessagesBase):
    """POST /v1/messages/count_tokens body."""


# --- response shapes (for /openapi.json and tests; the routes build plain dicts) -----------------------
class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingBlock(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class ToolUseBlock(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class AnthropicMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[Annotated[Union[ThinkingBlock, TextBlock, ToolUseBlock], Field(discriminator="type")]]
    model: str
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: AnthropicUsage


class CountTokensResponse(BaseModel):
    input_tokens: int


class AnthropicErrorDetail(BaseModel):
    type: Literal["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                  "request_too_large", "rate_limit_error", "api_error", "overloaded_error"]
    message: str


class AnthropicErrorResponse(BaseModel):
    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


# --- translation to the chat template's messages ---------------------------------------------------
@dataclass
class ChatRequest:
    """A Messages request as the chat pipeline sees it (OpenAI-style messages and tools)."""

    messages: list[dict]
    tools: list[dict] | None = None
    tool_choice: Any = None  # OpenAI form: "auto" | "required" | "none" | {"type": "function", ...}
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    continue_final: bool = False
    single_tool_call: bool = False  # disable_parallel_tool_use
    omit_thinking: bool = False  # thinking.display == "omitted"


def _bad(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param)


def _text_of(blocks: list[TextBlockParam]) -> str:
    return "\n".join(b.text for b in blocks)


# Anthropic's accepted image types (base64 sources must name one).
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _media_part(block: ImageBlockParam | DocumentBlockParam, where: str) -> MediaPart:
    """An image block as a MediaPart named `where` (e.g. messages.0.content.1); ApiError(400) on what this server
    cannot take (documents, file ids) or a malformed source."""
    if block.type != "image":
        raise _bad(f"{where}: {block.type} blocks are not supported by this server", f"{where}.type")
    src = block.source
    kind = src.get("type")
    if kind == "base64":
        media_type, data = src.get("media_type"), src.get("data")
        if media_type not in IMAGE_MEDIA_TYPES:
            raise _bad(f"{where}.source.media_type: must be one of {', '.join(IMAGE_MEDIA_TYPES)}, not "
                       f"{media_type!r}", f"{where}.source.media_type")
        if not isinstance(data, str) or not data:
            raise _bad(f"{where}.source.data: base64 image data is required", f"{where}.source.data")
        return MediaPart("image", f"data:{media_type};base64,{data}", where)
    if kind == "url":
        url = src.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _bad(f"{where}.source.url: a URL is required", f"{where}.source.url")
        return MediaPart("image", url, where)
    if kind == "file":
        raise _bad(f"{where}.source: file sources are not supported (this server has no Files API)",
                   f"{where}.source.type")
    raise _bad(f"{where}.source.type: must be 'base64' or 'url', not {kind!r}", f"{where}.source.type")


def _tool_result_message(block: ToolResultBlockParam, name: str, where: str) -> dict:
    content: Any = block.content
    if isinstance(content, list):
        parts = [{"type": "text", "text": p.text} if p.type == "text" else _media_part(p, f"{where}.content.{k}")
                 for k, p in enumerate(content)]
        content = _content(parts)
    elif content is None:
        content = ""
    if block.is_error:
        # The chat templates have no error flag for tool results; say it in the text the model reads.
        if isinstance(content, str):
            content = "Error: " + content
        else:
            content = [{"type": "text", "text": "Error:"}, *content]
    return {"role": "tool", "tool_call_id": block.tool_use_id, "name": name, "content": content}


def _check_turns(msgs: list[InputMessageParam]) -> None:
    turns = [m for m in msgs if m.role != "system"]
    if not turns:
        raise _bad("messages: at least one user message is required", "messages")
    if turns[0].role != "user":
        raise _bad("messages: the first message must use the \"user\" role", "messages.0.role")
    last = len(msgs) - 1
    for i, m in enumerate(msgs):
        empty = m.content == "" or m.content == []
        if empty and not (i == last and m.role == "assistant"):
            raise _bad(f"messages.{i}: all messages must have non-empty content except for the optional "
                       "final assistant message", f"messages.{i}.content")
        if isinstance(m.content, list):
            for j, b in enumerate(m.content):
                if b.type == "text" and not b.text and m.role != "assistant":
                    raise _bad(f"messages.{i}.content.{j}.text: text content blocks must be non-empty",
                               f"messages.{i}.content.{j}.text")
                if m.role == "user" and b.type in ("tool_use", "thinking", "redacted_thinking"):
                    raise _bad(f"messages.{i}.content.{j}: a user message cannot contain a {b.type} block",
                               f"messages.{i}.content.{j}.type")
                if m.role == "assistant" and b.type in ("tool_result", "image", "document"):
                    raise _bad(f"messages.{i}.content.{j}: an assistant message cannot contain a {b.type} block",
                               f"messages.{i}.content.{j}.type")
                if m.role == "system" and b.type != "text":
                    raise _bad(f"messages.{i}.content.{j}: a system message may only contain text blocks",
                               f"messages.{i}.content.{j}.type")


def _tools_and_choice(req: _MessagesBase) -> tuple[list[dict] | None, Any, bool]:
    tools = None
    if req.tools:
        names: set[str] = set()
        tools = []
        for i, t in enumerate(req.tools):
            if t.name in names:
                raise _bad(f"tools: tool names must be unique; '{t.name}' appears twice", f"tools.{i}.name")
            names.add(t.name)
            fn: dict[str, Any] = {"name": t.name, "parameters": t.input_schema}
            if t.description is not None:
                fn["description"] = t.description
            tools.append({"type": "function", "function": fn})
    tc = req.tool_choice
    if tc is None:
        return tools, None, False
    single = bool(getattr(tc, "disable_parallel_tool_use", False))
    if tc.type == "none":
        return tools, "none", False
    if tc.type == "auto":
        return tools, "auto", single
    if not tools:
        raise _bad(f"tool_choice.type '{tc.type}' requires 'tools'", "tool_choice")
    if tc.type == "any":
        return tools, "required", single
    if tc.name not in {t["function"]["name"] for t in tools}:
        raise _bad(f"tool_choice names tool '{tc.name}', which is not in tools", "tool_choice.name")
    return tools, {"type": "function", "function": {"name": tc.name}}, single


def _thinking_kwargs(req: _MessagesBase) -> tuple[dict[str, Any], bool]:
    th = req.thinking
    if th is None:
        return {}, False
    on = th.type != "disabled"
    if th.type == "enabled" and isinstance(req, MessagesRequest) and th.budget_tokens >= req.max_tokens:
        raise _bad(f"`max_tokens` must be greater than `thinking.budget_tokens` ({th.budget_tokens})",
                   "thinking.budget_tokens")
    omit = getattr(th, "display", None) == "omitted"
    return {"enable_thinking": on, "thinking": on}, omit


def to_chat_request(req: _MessagesBase) -> ChatRequest:
    """Validate the conversation's structure and translate it; ApiError(400) naming the field on faults."""
    msgs = req.messages
    _check_turns(msgs)
    tools, tool_choice, single = _tools_and_choice(req)
    kwargs, omit = _thinking_kwargs(req)
    out: list[dict] = []
    if req.system:
        text = req.system if isinstance(req.system, str) else _text_of(req.system)
        out.append({"role": "system", "content": text})
    tool_names: dict[str, str] = {}  # tool_use id → tool name, for tool_result checks
    for i, m in enumerate(msgs):
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        if m.role == "system":
            out.append({"role": "system", "content": _text_of(m.content)})  # type: ignore[arg-type]
        elif m.role == "assistant":
            out.append(_assistant_message(m.content, tool_names))
        else:
            out.extend(_user_messages(i, m.content, tool_names))
    last = msgs[-1]
    continue_final = last.role == "assistant" and bool(out) and out[-1]["role"] == "assistant" \
        and bool(out[-1].get("content")) and not out[-1].get("tool_calls")
    return ChatRequest(out, tools, tool_choice, kwargs, continue_final, single, omit)


def _assistant_message(blocks: list, tool_names: dict[str, str]) -> dict:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict] = []
    for b in blocks:
        if b.type == "text":
            texts.append(b.text)
        elif b.type == "thinking":
            thoughts.append(b.thinking)
        elif b.type == "tool_use":
            tool_names[b.id] = b.name
            calls.append({"id": b.id, "type": "function",
                          "function": {"name": b.name, "arguments": orjson.dumps(b.input).decode()}})
        # redacted_thinking: opaque data another model encrypted; nothing a chat template can render.
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if thoughts:
        msg["reasoning_content"] = "\n".join(thoughts)
    if calls:
        msg["tool_calls"] = calls
    return msg


def _user_messages(i: int, blocks: list, tool_names: dict[str, str]) -> list[dict]:
    """A user turn in order: tool results become `tool` messages, text and media a `user` message."""
    out: list[dict] = []
    parts: list[dict] = []
    for j, b in enumerate(blocks):
        if b.type == "tool_result":
            name = tool_names.get(b.tool_use_id)
            if name is None:
                raise _bad(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                           f"{b.tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` "
                           "block in an earlier message.", f"messages.{i}.content.{j}.tool_use_id")
            if parts:
                out.append(_user_message(parts))
                parts = []
            out.append(_tool_result_message(b, name, f"messages.{i}.content.{j}"))
        elif b.type == "text":
            parts.append({"type": "text", "text": b.text})
        else:
            parts.append(_media_part(b, f"messages.{i}.content.{j}"))
    if parts:
        out.append(_user_message(parts))
    return out


def _content(parts: list[dict | MediaPart]) -> str | list[dict | MediaPart]:
    """Text parts joined into one string; with media, the parts (media as MediaParts) in order."""
    if all(isinstance(p, dict) for p in parts):
        return "\n".join(p["text"] for p in parts)  # type: ignore[index]
    return parts


def _user_message(parts: list[dict | MediaPart]) -> dict:
    return {"role": "user", "content": _content(parts)}


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (AnthropicMessage, CountTokensResponse, AnthropicErrorResponse)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (MessagesRequest, CountTokensRequest)
