"""OpenAI request models (pydantic, validated once at the edge) for chat and text completions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Fields clients send that this server accepts only at their neutral value: anything else asks for a
# behaviour the server does not have, so it is refused by name instead of silently ignored.
_NEUTRAL: dict[str, Any] = {
    "logit_bias": lambda v: not v,
    "spaces_between_special_tokens": lambda v: v is True,
    "store": lambda v: not v,
    "service_tier": lambda v: v in (None, "auto", "default"),
    "truncate_prompt_tokens": lambda v: v is None,
    "add_special_tokens": lambda v: not v,
    "cache_salt": lambda v: v is None,
    "length_penalty": lambda v: v in (None, 1.0),
    "use_beam_search": lambda v: not v,
    "return_tokens_as_token_ids": lambda v: not v,
    "modalities": lambda v: v in (None, ["text"]),
    "prediction": lambda v: v is None,
    "audio": lambda v: v is None,
    "functions": lambda v: v is None,
    "function_call": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "verbosity": lambda v: v is None,
    "mm_processor_kwargs": lambda v: v is None,
    "use_raw_prompt": lambda v: not v,
    "max_thinking_tokens": lambda v: v is None,
    "extra_fields": lambda v: v is None,
}


def refuse_unsupported(model: BaseModel, prefix: str = "") -> None:
    """ValueError naming the first field set to a value whose behaviour this server does not implement."""
    for name in model.model_fields_set:
        neutral = _NEUTRAL.get(name)
        if neutral is not None and not neutral(getattr(model, name)):
            raise ValueError(f"'{prefix}{name}'={getattr(model, name)!r} is not supported by this server")


class AgentHints(_Strict):
    """Scheduling hints from agentic clients (Dynamo's nvext.agent_hints)."""

    priority: StrictInt | None = None  # lower = more urgent (API convention)
    latency_sensitivity: float | None = Field(default=None, ge=0.0)
    osl: StrictInt | None = Field(default=None, ge=0)  # expected output tokens: the router reserves their blocks


class NvExt(_Strict):
    """Dynamo's request extension object."""

    ignore_eos: StrictBool | None = None
    top_k: StrictInt | None = None
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    greed_sampling: StrictBool | None = None
    use_raw_prompt: StrictBool | None = None
    annotations: list[str] | None = None
    backend_instance_id: StrictInt | None = Field(default=None, ge=0)
    dp_rank: StrictInt | None = Field(default=None, ge=0)
    agent_hints: AgentHints | None = None
    max_thinking_tokens: StrictInt | None = Field(default=None, ge=0)
    extra_fields: list[str] | None = None

    @model_validator(mode="after")
    def _supported(self) -> "NvExt":
        refuse_unsupported(self, "nvext.")
        return self


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"] = "function"
    function: FunctionDef


class ContentPart(BaseModel):
    """One part of a message's content: text, or media (image_url, video_url, input_audio, audio_url) that the
    chat pipeline checks, fetches and decodes (serving/media_input.py)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    """A chat message; extra keys (name, tool_call_id, reasoning_content, ...) reach the chat template."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _content_required(self) -> "Message":
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            if self.role != "assistant":
                raise ValueError(f"a '{self.role}' message needs 'content'")
        return self


class _Sampling(_Strict):
    """Sampling and stop fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, gt=0)
    temperature: Temperature | None = None
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: StrictInt | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[StrictInt] | None = None
    n: StrictInt = Field(default=1, ge=1)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    ignore_eos: StrictBool = False
    min_tokens: StrictInt = Field(default=0, ge=0)
    user: str | None = None
    nvext: NvExt | None = None
    # Accepted for compatibility with OpenAI / vLLM / SGLang clients; not all change behaviour.
    logit_bias: dict[str, float] | None = None
    skip_special_tokens: StrictBool = True
    spaces_between_special_tokens: StrictBool = True
    include_stop_str_in_output: StrictBool = False
    response_format: dict[str, Any] | None = None
    guided_json: Any = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    structured_outputs: dict[str, Any] | None = None
    priority: StrictInt | None = None
    request_id: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    truncate_prompt_tokens: StrictInt | None = None
    add_special_tokens: StrictBool | None = None
    cache_salt: str | None = None
    length_penalty: float | None = None
    use_beam_search: StrictBool | None = None
    best_of: StrictInt | None = None
    return_tokens_as_token_ids: StrictBool | None = None

    @model_validator(mode="after")
    def _supported(self) -> "_Sampling":
        refuse_unsupported(self)
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError(f"'best_of'={self.best_of} is not supported by this server (only best_of == n)")
        return self

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and any(s == "" for s in v):
            raise ValueError("stop strings must not be empty")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None or self.stop == "":
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions body."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, gt=0)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], dict[str, Any], None] = None
    parallel_tool_calls: StrictBool = True
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    echo: StrictBool = False
    documents: list[dict[str, Any]] | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    web_search_options: dict[str, Any] | None = None
    verbosity: str | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    # Decoder options of this request's media (vLLM / Dynamo): {"video": {"fps": 1.0, "max_frames": 16}}, within
    # the server's limits.
    media_io_kwargs: dict[str, Any] | None = None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_shape(cls, v: Any) -> Any:
        if isinstance(v, dict):
            fn = v.get("function")
            if v.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError("a named tool_choice must be {\"type\": \"function\", \"function\": {\"name\": ...}}")
        return v

    @model_validator(mode="after")
    def _chat_echo(self) -> "ChatCompletionRequest":
        if self.echo:
            raise ValueError("'echo'=True is not supported for chat completions by this server")
        return self

    @model_validator(mode="after")
    def _logprob_fields(self) -> "ChatCompletionRequest":
        if self.top_logprobs is not None and self.top_logprobs > 0 and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs=true")
        return self

    def effective_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


PromptType = Union[str, list[str], list[StrictInt], list[list[StrictInt]]]


class CompletionRequest(_Sampling):
    """POST /v1/completions body."""

    prompt: PromptType
    echo: StrictBool = False
    logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_nonempty(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) == 0:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and v and isinstance(v[0], list) and any(len(p) == 0 for p in v):
            raise ValueError("token-id prompts must not be empty")
        if isinstance(v, list) and any(isinstance(t, int) and t < 0 for t in v):
            raise ValueError("token ids must be >= 0")
        return v

    def effective_max_tokens(self) -> int | None:
        return self.max_tokens
