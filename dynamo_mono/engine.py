"""The engine seam: request/output types, model card and the Engine protocol every engine implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, runtime_checkable

from dynamo_mono.kv_events import KvEventBatch

# An engine instance is addressed everywhere (routing, indexing, load, metrics) by this pair.
InstanceKey = tuple[int, int]  # (worker_id, dp_rank)


@dataclass(slots=True)
class SamplingParams:
    """Sampling knobs forwarded to the engine; None means the engine's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # None or 0 = off
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    n: int = 1
    logprobs: int | None = None  # number of top logprobs per token; None = no logprobs
    response_format: dict | None = None  # structured output request, passed through
    guided: dict | None = None  # vLLM-style guided_regex / guided_choice / guided_json


@dataclass(slots=True)
class StopConditions:
    """When generation ends, evaluated by the engine (token ids) and the postprocessor (strings)."""

    max_tokens: int
    min_tokens: int = 0
    stop_token_ids: list[int] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False


@dataclass(slots=True)
class EngineRequest:
    """One generation request as the engine sees it: tokens in, tokens out."""

    request_id: str
    token_ids: list[int]
    sampling: SamplingParams
    stop: StopConditions
    model: str = ""
    priority: int = 0  # API convention: lower value = more urgent (translated per engine)
    lora_name: str | None = None
    worker_id: int | None = None  # routing hint / pin
    dp_rank: int | None = None  # routing hint
    block_hashes: list[int] | None = None  # chained block hashes of token_ids, computed once
    multimodal: list[dict] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)
    tools: list[dict] | None = None  # carried for engines / mockers that need them
    choice_index: int = 0  # which of n choices this sub-request serves (when fanned out)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TokenLogprob:
    """Logprob of one sampled token and its top alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass(slots=True)
class EngineOutput:
    """A delta from the engine. Empty non-final outputs are legal keep-alives."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "error" | "abort" | None
    stop_token_id: int | None = None  # which stop/eos token ended it (not in token_ids)
    cached_tokens: int | None = None  # prompt tokens served from prefix cache (set on first output)
    prompt_tokens: int | None = None
    error: str | None = None  # engine-side failure message when finish_reason == "error"
    index: int = 0  # choice index when an engine serves n > 1 itself


class EngineError(Exception):
    """An engine failed a request; the frontend may migrate it to another instance."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(slots=True)
class ModelCard:
    """What an engine instance tells the frontend about the model it serves."""

    name: str
    max_model_len: int
    block_size: int
    dp_size: int = 1
    total_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    # capabilities
    supports_priority: bool = False
    priority_higher_is_urgent: bool = False  # SGLang default; vLLM: lower is more urgent
    supports_lora: bool = False
    supports_n: bool = False  # engine fans out n itself; otherwise the frontend does
    supports_logprobs: bool = True
    kv_events: bool = False  # publishes KV events (else the router uses approximate mode)
    modalities: list[str] = field(default_factory=lambda: ["text"])
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(slots=True)
class LoadMetrics:
    """Per-(instance, dp_rank) load snapshot an engine reports for routing and /metrics."""

    dp_rank: int = 0
    running: int = 0
    waiting: int = 0
    kv_active_blocks: int = 0
    kv_total_blocks: int = 0
    prefix_hit_rate: float = 0.0
    preemptions: int = 0


KvEventSink = Callable[[KvEventBatch], None]


@runtime_checkable
class Engine(Protocol):
    """An engine instance. One object may hold several dp ranks (card.dp_size)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def model_card(self) -> ModelCard: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream outputs for one request. Cancellation of the consuming task aborts it."""
        ...

    async def abort(self, request_id: str) -> None: ...

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        """Install (or remove) the callback that receives this instance's KV event batches."""
        ...

    def kv_snapshot(self) -> list[KvEventBatch]:
        """All blocks currently cached, as BlockStored batches, for index recovery."""
        ...

    def load_metrics(self) -> list[LoadMetrics]: ...

    def healthy(self) -> bool: ...


@dataclass(slots=True)
class EngineArgs:
    """What the server hands an engine factory: model location, tokenizer facts and raw extra args."""

    model_path: str
    served_model_name: str
    instance_id: int
    max_model_len: int
    eos_token_ids: list[int]
    vocab_size: int
    options: dict[str, Any]  # this engine's own options (those it registered), resolved for this model
    tokenizer: Any = None  # dynamo_mono.preprocess.tokenizer.Tokenizer, for engines that need text
    reasoning_parser: str | None = None  # parser names the engine announces in its card (and formats for)
    tool_call_parser: str | None = None
    extra_args: list[str] = field(default_factory=list)  # pass-through CLI args (engines registered for them)


EngineFactory = Callable[[EngineArgs], Engine]
