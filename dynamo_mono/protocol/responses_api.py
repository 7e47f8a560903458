"""OpenAI Responses API requests (pydantic, validated once) and their translation to a chat conversation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictInt, Tag, ValidationError,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

from dynamo_mono.media.parts import MediaPart
from dynamo_mono.protocol.errors import ApiError, format_validation_error

ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _bad(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", message)


# --- content parts -------------------------------------------------------------------------------
class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class InputImage(_Strict):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"


class OutputText(_Strict):
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class Refusal(_Strict):
    type: Literal["refusal"]
    refusal: str


_PART_TYPES = ("input_text", "input_image", "output_text", "refusal")
ContentPart = Annotated[Union[InputText, InputImage, OutputText, Refusal], Field(discriminator="type")]
ToolOutputPart = Annotated[Union[InputText, InputImage], Field(discriminator="type")]


def _check_parts(value: Any, allowed: tuple[str, ...]) -> Any:
    """A clear error for a content part of a type this server does not take (input_file, input_audio, ...)."""
    if isinstance(value, list):
        for j, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                raise _bad(f"content[{j}] has unsupported type {kind!r}; supported: {', '.join(allowed)}")
    return value


# --- input items ---------------------------------------------------------------------------------
class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: Union[str, list[ContentPart]]
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _known_parts(cls, v: Any) -> Any:
        return _check_parts(v, _PART_TYPES)

    @model_validator(mode="after")
    def _parts_fit_role(self) -> "MessageItem":
        if isinstance(self.content, list):
            for j, part in enumerate(self.content):
                assistant_part = part.type in ("output_text", "refusal")
                if assistant_part != (self.role == "assistant"):
                    allowed = "output_text, refusal" if self.role == "assistant" else "input_text, input_image"
                    raise _bad(f"content[{j}]: a '{self.role}' message cannot contain '{part.type}' "
                               f"(supported: {allowed})")
        return self


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Union[str, list[ToolOutputPart]]
    id: str | None = None
    status: ItemStatus | None = None

    @field_validator("output", mode="before")
    @classmethod
    def _known_parts(cls, v: Any) -> Any:
        return _check_parts(v, ("input_text", "input_image"))


class SummaryText(_Strict):
    type: Literal["summary_text"]
    text: str


class ReasoningText(_Strict):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(_Strict):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None

    @field_validator("encrypted_content")
    @classmethod
    def _no_encrypted(cls, v: str | None) -> str | None:
        if v is not None:
            raise _bad("encrypted reasoning is not supported by this server; send the reasoning item's content")
        return v


def _item_type(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("type", "message")
    return getattr(v, "type", None)


InputItem = Annotated[Union[Annotated[MessageItem, Tag("message")], Annotated[FunctionCallItem, Tag("function_call")],
                            Annotated[FunctionCallOutputItem, Tag("function_call_output")],
                            Annotated[ReasoningItem, Tag("reasoning")]], Discriminator(_item_type)]


# --- tools, formats, options ---------------------------------------------------------------------
class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class NamedFunction(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedTools(_Strict):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[NamedFunction] = Field(min_length=1)

    @field_validator("tools", mode="before")
    @classmethod
    def _functions_only(cls, v: Any) -> Any:
        if isinstance(v, list):
            for j, t in enumerate(v):
                if isinstance(t, dict) and t.get("type") != "function":
                    raise _bad(f"tools[{j}]: only function tools can be allowed (got {t.get('type')!r})")
        return v


def _choice_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "mode"
    return v.get("type") if isinstance(v, dict) else getattr(v, "type", None)


ToolChoice = Annotated[Union[Annotated[Literal["none", "auto", "required"], Tag("mode")],
                             Annotated[NamedFunction, Tag("function")], Annotated[AllowedTools, Tag("allowed_tools")]],
                       Discriminator(_choice_kind)]


class Reasoning(_Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    # The server returns the model's reasoning text itself, never a summary: "auto" (the best summary available)
    # is honoured with none; an explicit summary style is refused.
    summary: Literal["auto"] | None = None
    generate_summary: Literal["auto"] | None = None

    @field_validator("summary", "generate_summary", mode="before")
    @classmethod
    def _summary(cls, v: Any) -> Any:
        if v in ("concise", "detailed"):
            raise _bad(f"reasoning summaries ({v!r}) are not supported by this server; it returns the reasoning "
                       "text itself in the reasoning item's content (use 'auto' or omit it)")
        return v


class FormatText(_Strict):
    type: Literal["text"]


class FormatJsonSchema(_Strict):
    type: Literal["json_schema"]
    name: str = Field(min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: StrictBool | None = None


class FormatJsonObject(_Strict):
    type: Literal["json_object"]


class TextConfig(_Strict):
    format: Annotated[Union[FormatText, FormatJsonSchema, FormatJsonObject], Field(discriminator="type")] | None = None
    verbosity: str | None = None

    @field_validator("verbosity")
    @classmethod
    def _no_verbosity(cls, v: str | None) -> str | None:
        if v is not None:
            raise _bad(f"verbosity {v!r} is not supported by this server")
        return v


class StreamOptions(_Strict):
    include_obfuscation: StrictBool = False
    # a chat-completions field some clients (aiperf) send: usage is always in response.completed
    include_usage: StrictBool = True

    @field_validator("include_usage")
    @classmethod
    def _usage_always(cls, v: bool) -> bool:
        if not v:
            raise _bad("usage is always reported in response.completed; include_usage=false is not supported")
        return v

    @field_validator("include_obfuscation")
    @classmethod
    def _no_obfuscation(cls, v: bool) -> bool:
        if v:
            raise _bad("stream obfuscation is not supported by this server")
        return v


# Fields accepted only at their neutral value: anything else asks for a behaviour the server does not have.
_NEUTRAL: dict[str, tuple[Any, str]] = {
    "include": (lambda v: not v, "no 'include' values are supported by this server"),
    "truncation": (lambda v: v in (None, "disabled"), "truncation 'auto' is not supported: input that exceeds the "
                                                      "context is refused (400)"),
    "service_tier": (lambda v: v in (None, "auto", "default"), "service tiers other than 'auto' / 'default' are "
                                                                "not supported"),
    "prompt": (lambda v: v is None, "prompt templates are not supported by this server"),
    "conversation": (lambda v: v is None, "conversations are not supported; chain with previous_response_id"),
    "top_logprobs": (lambda v: not v, "logprobs are not supported on /v1/responses by this server"),
    "max_tool_calls": (lambda v: v is None, "max_tool_calls limits built-in tools, which this server does not have"),
    "prompt_cache_key": (lambda v: v is None, "prompt_cache_key is not supported: prefix caching is automatic"),
    "prompt_cache_retention": (lambda v: v is None, "prompt cache retention is not configurable per request"),
}


class ResponsesRequest(_Strict):
    """POST /v1/responses body."""

    model: str = Field(min_length=1)
    input: list[InputItem]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    max_output_tokens: StrictInt | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=128)
    store: StrictBool = True
    background: StrictBool = False
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    previous_response_id: str | None = Field(default=None, min_length=1)
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: str | None = None
    prompt: dict[str, Any] | None = None
    conversation: Any = None
    top_logprobs: StrictInt | None = None
    max_tool_calls: StrictInt | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None

    @field_validator("store", "background", "stream", "parallel_tool_calls", mode="before")
    @classmethod
    def _null_is_default(cls, v: Any, info: Any) -> Any:
        """The SDK types these Optional: an explicit null means the default."""
        return cls.model_fields[info.field_name].default if v is None else v

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> Any:
        if isinstance(v, str):
            if not v:
                raise _bad("input must not be empty")
            return [{"type": "message", "role": "user", "content": v}]
        if not isinstance(v, list):
            raise _bad("input must be a string or a list of input items")
        if not v:
            raise _bad("input must not be empty")
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise _bad(f"input[{i}] must be an object")
            kind = item.get("type", "message")
            if kind not in ITEM_TYPES:
                raise _bad(f"input[{i}] has unsupported item type {kind!r}; supported: {', '.join(ITEM_TYPES)}")
        return v

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools(cls, v: Any) -> Any:
        if isinstance(v, list):
            for j, t in enumerate(v):
                kind = t.get("type") if isinstance(t, dict) else None
                if kind != "function":
                    raise _bad(f"tools[{j}]: tool type {kind!r} is not supported by this server (built-in tools "
                               "are not available); only 'function' tools")
        return v

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, (str, dict)):
            raise _bad("tool_choice must be 'none', 'auto', 'required' or an object")
        if isinstance(v, dict) and v.get("type") not in ("function", "allowed_tools"):
            raise _bad(f"tool_choice type {v.get('type')!r} is not supported by this server "
                       "(none, auto, required, a function or allowed_tools)")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            if len(v) > 16:
                raise _bad(f"metadata has {len(v)} keys; at most 16 are allowed")
            for k, val in v.items():
                if len(k) > 64 or len(val) > 512:
                    raise _bad(f"metadata key {k[:64]!r}: keys are at most 64 and values at most 512 characters")
        return v

    @model_validator(mode="after")
    def _supported(self) -> "ResponsesRequest":
        for name in self.model_fields_set:
            rule = _NEUTRAL.get(name)
            if rule is not None and not rule[0](getattr(self, name)):
                raise _bad(f"'{name}'={getattr(self, name)!r} is not supported: {rule[1]}")
        if self.background and not self.store:
            raise _bad("background responses must be stored: 'background': true requires 'store': true")
        if self.background and self.stream:
            raise _bad("'background' with 'stream' is not supported; poll GET /v1/responses/{id} instead")
        return self


def parse_request(data: Any) -> ResponsesRequest:
    """Validate a request body once; ApiError(400) naming the offending parameter."""
    try:
        return ResponsesRequest.model_validate(data)
    except ValidationError as exc:
        message, param = format_validation_error(_Untagged(exc))
        raise ApiError(400, message, param=param) from None


class _Untagged:
    """A ValidationError's errors without the union tags pydantic puts in their locations."""

    def __init__(self, exc: ValidationError) -> None:
        self.exc = exc

    _TAGS = frozenset({*ITEM_TYPES, *_PART_TYPES, "text", "json_schema", "json_object", "mode", "function",
                       "allowed_tools"})
    _TAGGED = ("format", "tool_choice")  # fields whose value is a tagged union

    def errors(self, **kw: Any) -> list[dict]:
        out = []
        for e in self.exc.errors(**kw):
            loc = e.get("loc", ())
            # a tag follows a list index (items, parts) or a tagged field; a field of that name does not
            keep = [p for k, p in enumerate(loc)
                    if not (p in self._TAGS and k and (isinstance(loc[k - 1], int) or loc[k - 1] in self._TAGGED))]
            out.append({**e, "loc": tuple(keep)})
        return out


# --- translation to a chat conversation ----------------------------------------------------------
@dataclass
class ChatForm:
    """A Responses request as the chat pipeline takes it."""

    messages: list[dict]
    tools: list[dict] | None  # chat-format function tools
    tool_choice: Any  # chat-format tool_choice
    template_kwargs: dict[str, Any] | None
    response_format: dict[str, Any] | None
    media: list[MediaPart] = field(default_factory=list)  # media parts of the conversation (in its messages too)


def _bad_request(message: str, param: str) -> ApiError:
    return ApiError(400, message, param=param)


def dump_items(req: ResponsesRequest) -> list[dict]:
    """The request's input items as plain dicts (what a stored response keeps for chaining)."""
    return [item.model_dump(exclude_none=True, by_alias=True) for item in req.input]


def to_chat(req: ResponsesRequest, history: list[dict], items: list[dict]) -> ChatForm:
    """Translate: instructions, then `history` (a previous response's input and output items), then `items`."""
    tools, tool_choice = _tools_and_choice(req)
    kwargs = {"reasoning_effort": req.reasoning.effort} if req.reasoning and req.reasoning.effort else None
    messages, media = items_to_messages([*history, *items], req.instructions, first=len(history))
    return ChatForm(messages, tools, tool_choice, kwargs, response_format(req), media)


def response_format(req: ResponsesRequest) -> dict[str, Any] | None:
    """text.format as the chat `response_format` an engine takes."""
    fmt = req.text.format if req.text is not None else None
    if isinstance(fmt, FormatJsonSchema):
        spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        if fmt.description is not None:
            spec["description"] = fmt.description
        return {"type": "json_schema", "json_schema": spec}
    if isinstance(fmt, FormatJsonObject):
        return {"type": "json_object"}
    return None


def _tools_and_choice(req: ResponsesRequest) -> tuple[list[dict] | None, Any]:
    tools: list[dict] | None = None
    names: list[str] = []
    if req.tools:
        tools = []
        for j, t in enumerate(req.tools):
            if t.name in names:
                raise _bad_request(f"tools: function names must be unique; '{t.name}' appears twice",
                                   f"tools.{j}.name")
            names.append(t.name)
            fn = t.model_dump(exclude_none=True, exclude={"type"})
            tools.append({"type": "function", "function": fn})
    tc = req.tool_choice
    if tc is None or isinstance(tc, str):
        if tc == "required" and not tools:
            raise _bad_request("tool_choice 'required' requires 'tools'", "tool_choice")
        return tools, tc
    if not tools:
        raise _bad_request(f"tool_choice of type '{tc.type}' requires 'tools'", "tool_choice")
    if isinstance(tc, NamedFunction):
        if tc.name not in names:
            raise _bad_request(f"tool_choice names function '{tc.name}', which is not in tools ({names})",
                               "tool_choice.name")
        return tools, {"type": "function", "function": {"name": tc.name}}
    allowed = [t.name for t in tc.tools]
    for j, name in enumerate(allowed):
        if name not in names:
            raise _bad_request(f"tool_choice.tools[{j}] names function '{name}', which is not in tools ({names})",
                               f"tool_choice.tools.{j}.name")
    return [t for t in tools if t["function"]["name"] in allowed], tc.mode


def _chat_part(part: dict, param: str) -> dict | MediaPart:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": part["refusal"]}
    # input_image
    if part.get("file_id") is not None or not part.get("image_url"):
        raise _bad_request("input_image needs an 'image_url' (a URL or a data: URL); file ids are not supported "
                           "(this server has no Files API)", param)
    return MediaPart("image", part["image_url"], param, part.get("detail", "auto"))


def _chat_content(content: Any, param: str, media: list[MediaPart]) -> Any:
    if isinstance(content, str):
        return content
    parts = [_chat_part(p, f"{param}.{j}") for j, p in enumerate(content)]
    media.extend(p for p in parts if isinstance(p, MediaPart))
    if all(isinstance(p, dict) for p in parts):
        return "\n".join(p["text"] for p in parts)  # type: ignore[index]
    return parts


def items_to_messages(items: list[dict], instructions: str | None, *,
                      first: int = 0) -> tuple[list[dict], list[MediaPart]]:
    """Chat messages for Responses items (ApiError 400 on a function_call_output without its call), and the
    media parts they carry. Reasoning, assistant text and function calls of one turn become one assistant
    message. `first` is the index of the request's own first item (errors name `input[i]` from there)."""
    messages: list[dict] = []
    media: list[MediaPart] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    calls: dict[str, str] = {}  # call_id -> function name, of the function_call items so far
    turn: dict | None = None  # the assistant message being assembled

    def assistant(fresh: bool) -> dict:
        nonlocal turn
        if turn is None or fresh:
            turn = {"role": "assistant", "content": ""}
            messages.append(turn)
        return turn

    for i, it in enumerate(items):
        param = f"input.{i - first}" if i >= first else "previous_response_id"
        kind = it["type"]
        if kind == "message":
            content = _chat_content(it["content"], param + ".content", media)
            if it["role"] == "assistant":
                msg = assistant(turn is None or bool(turn["content"]) or "tool_calls" in turn)
                msg["content"] = content
            else:
                turn = None
                messages.append({"role": it["role"], "content": content})
        elif kind == "reasoning":
            parts = it.get("content") or it.get("summary") or []
            text = "\n".join(p["text"] for p in parts)
            msg = assistant(turn is None or bool(turn["content"]) or "tool_calls" in turn)
            msg["reasoning_content"] = msg.get("reasoning_content", "") + text
        elif kind == "function_call":
            calls[it["call_id"]] = it["name"]
            fn = {"name": it["name"], "arguments": it["arguments"]}
            assistant(False).setdefault("tool_calls", []).append({"id": it["call_id"], "type": "function",
                                                                  "function": fn})
        else:  # function_call_output
            name = calls.get(it["call_id"])
            if name is None:
                raise _bad_request(f"input[{i - first}]: no function_call with call_id '{it['call_id']}' precedes this "
                                   "function_call_output", param + ".call_id")
            turn = None
            messages.append({"role": "tool", "tool_call_id": it["call_id"], "name": name,
                             "content": _chat_content(it["output"], param + ".output", media)})
    if not any(m["role"] != "system" for m in messages):
        raise _bad_request("input has no message to answer (only instructions / system messages)", "input")
    return messages, media
