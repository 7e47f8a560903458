"""The engine seam: request/output types, model card and the Engine protocol every engine implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Protocol, runtime_checkable

import numpy as np

from dynamo_mono.kv_events import KvbmMetrics, KvEventBatch

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


DISAGGREGATION_MODES = ("agg", "prefill", "decode")
# Model kinds an engine instance can serve: chat (generate) and embedding (embed).
ENGINE_KINDS = ("chat", "embedding")
# Model kinds a media generator (registered with register_modalities) serves: generate_media().
MEDIA_KINDS = ("image", "video", "audio")
MODEL_KINDS = ENGINE_KINDS + MEDIA_KINDS


@dataclass(slots=True)
class MediaLimits:
    """What a media generator instance can make (its card's `media`): the server checks every request against
    these and fills defaults, so a generator only ever sees values inside them. A feature flag that is False
    makes the server refuse the field with a 400 (a generator never has to ignore a value)."""

    output_formats: tuple[str, ...]  # encodings it produces (media.encode.output_formats(kind) where it runs)
    max_n: int = 1  # outputs one request may ask for (images: the API allows 1-10)
    # images and video frames
    default_width: int = 0
    default_height: int = 0
    max_width: int = 0
    max_height: int = 0
    size_multiple: int = 8  # width and height must be multiples of this (the VAE's scale factor)
    default_steps: int = 0  # denoising steps (0 = the generator has no steps)
    max_steps: int = 0
    default_guidance_scale: float | None = None  # None: guidance_scale is not a knob of this generator
    negative_prompt: bool = False
    # video
    default_frames: int = 0
    max_frames: int = 0
    default_fps: int = 0
    max_fps: int = 0
    frames_step: int = 1  # num_frames - 1 must be a multiple of this (Wan-class models: 4, i.e. 4k + 1 frames)
    input_reference: bool = False  # takes an image to start from (image-to-video)
    input_reference_required: bool = False  # makes video only from an image (input_reference must be given)
    # audio
    sample_rate: int = 0
    default_seconds: float = 0.0  # 0: the duration follows the input text's length
    min_seconds: float = 0.0
    max_seconds: float = 0.0
    voices: tuple[str, ...] = ()  # accepted `voice` values; the first is the default
    speed: bool = False  # acts on `speed` (0.25-4.0)


@dataclass(frozen=True, slots=True)
class KvEndpoint:
    """Where a prefill instance's KV transport serves published blocks (what KvTransport.start() returns)."""

    transport: str  # registered transport name ("tcp", "nixl", ...); a puller must speak the same one
    host: str
    port: int
    agent: str | None = None  # transport-specific peer name (the NIXL agent), for diagnostics


@dataclass(frozen=True, slots=True)
class KvTransferParams:
    """Decode side of disaggregation: the prompt's first num_blocks KV blocks, published under key at endpoint.

    A prefill engine that names its own transfer (EngineOutput.kv_transfer) fills the fields after num_blocks;
    the server hands them unchanged to the decode instance it picks (an engine of the same kind reads them)."""

    endpoint: KvEndpoint
    key: str  # the prefill instance's name of the published KV (mocker: publish key; vLLM: its request id)
    num_blocks: int
    engine_id: str | None = None  # the prefill engine's transfer identity (vLLM: NIXL engine id)
    block_ids: tuple[tuple[int, ...], ...] = ()  # per KV cache group, the prefill instance's blocks of the prompt
    num_tokens: int = 0  # prompt tokens whose KV is published (0: num_blocks full blocks)
    cached_tokens: int = 0  # of those, tokens the prefill instance found in its own prefix cache
    tp_size: int = 1  # the prefill instance's parallel layout (a decode instance maps its ranks onto it)
    pp_size: int = 1
    dcp_size: int = 1
    # True: the KV covers the prompt only and the decode instance computes the first output token itself (vLLM);
    # the prefill's first token is not streamed. False: decode continues after the prefill's first token (mocker).
    first_token_on_decode: bool = False


@dataclass(slots=True)
class MediaItem:
    """One image, video or audio clip of a prompt, fetched and decoded by the server, and the placeholder tokens
    of token_ids that stand for it. The arrays are read-only and may be shared between requests (cache)."""

    kind: str  # "image" | "video" | "audio"
    data: np.ndarray  # image (H, W, 3) uint8; video (T, H, W, 3) uint8; audio (S,) float32 mono
    uuid: str  # 64 hex digits (SHA-256 of the encoded bytes, + sampling options for video): key engine caches by it
    content_hash: int  # u64 (the uuid's first 16 hex digits): mixed into the block hashes its placeholders cover
    start: int  # index in token_ids of its first placeholder token
    length: int  # number of placeholder tokens
    fps: float | None = None  # video: the frame rate the frames were sampled at
    sample_rate: int | None = None  # audio


@dataclass(slots=True)
class EngineRequest:
    """One generation request as the engine sees it: tokens in, tokens out. Engines never modify it."""

    request_id: str
    token_ids: list[int]
    sampling: SamplingParams
    stop: StopConditions
    model: str = ""
    priority: int = 0  # lower = more urgent in the API; the pool hands each engine its own convention
    worker_id: int | None = None  # routing hint / pin
    dp_rank: int | None = None  # routing hint; set by the pool to the rank it chose before dispatch
    block_hashes: list[int] | None = None  # chained block hashes of token_ids, computed once
    media: list[MediaItem] = field(default_factory=list)  # media of the prompt, in placeholder order
    annotations: list[str] = field(default_factory=list)
    expected_output_tokens: int | None = None  # client's output-length hint (nvext.agent_hints.osl), for routing
    tools: list[dict] | None = None  # carried for engines / mockers that need them
    # The client's tool_choice in OpenAI form: "auto" | "required" | "none" | {"type": "function", "function": {...}}
    tool_choice: str | dict[str, Any] | None = None
    choice_index: int = 0  # which of n choices this sub-request serves (when fanned out)
    # Migration: the last resumed_output_tokens of token_ids were generated by an earlier attempt (the
    # engine continues at that output position; max_tokens / min_tokens already count them).
    resumed_output_tokens: int = 0
    # Disaggregation, prefill side: keep the prompt's KV and publish it under this key for a decode instance.
    kv_export_key: str | None = None
    # Disaggregation, decode side: pull the prompt's KV from a prefill instance instead of computing it.
    kv_transfer: KvTransferParams | None = None
    # LoRA: generate with this adapter (loaded on the instance with load_lora); None = the base model. Block
    # hashes of an adapter request are seeded with the adapter name (block_hash.lora_seed).
    lora_name: str | None = None


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
    # Disaggregation, prefill side (request.kv_export_key set): where the prompt's KV waits for a decode instance;
    # set on the final output by engines that name their own transfer (else the server builds it from the card).
    kv_transfer: KvTransferParams | None = None


@dataclass(slots=True)
class EmbeddingRequest:
    """One batch of inputs for an embedding instance: one token list per input. Engines never modify it."""

    request_id: str
    token_ids: list[list[int]]  # the inputs, each already tokenized (and truncated) by the server
    dimensions: int | None = None  # truncate each vector to this many and renormalise (card.matryoshka); None = full
    model: str = ""
    priority: int = 0  # in the engine's own convention, as for EngineRequest
    worker_id: int | None = None  # routing hint / pin
    dp_rank: int | None = None  # set by the pool to the rank it chose before dispatch


@dataclass(slots=True)
class EmbeddingOutput:
    """What `embed()` returns: row i of `embeddings` is the unit-norm vector of input i."""

    embeddings: np.ndarray  # float32, shape (len(request.token_ids), dimensions or card.embedding_dim)
    prompt_tokens: int  # tokens embedded (the sum over the inputs)


class EngineError(Exception):
    """An engine failed a request. retryable: the instance failed (the pool may migrate the request to
    another); not retryable: the request itself cannot be served (it ends at once, no migration)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class RequestRejected(EngineError):
    """The engine refused the request's own parameters (e.g. a stop token id outside its vocabulary): a client error
    (HTTP 400), never retried or migrated. Raise it before the first output."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message, retryable=False)
        self.param = param


# Media a chat model may take as input (content parts); "text" is always taken.
MEDIA_INPUT_KINDS = ("image", "video", "audio")


@dataclass(frozen=True, slots=True)
class MediaTokens:
    """How a chat model takes one medium as input (its card's `media_input[kind]`): the placeholder token its chat
    template emits once per item, and how many copies of it an item becomes in the prompt. The server expands each
    placeholder (media/tokens.py), so usage, the context check and the KV block hashes count what the model computes.

    Images, and each group of video frames, count like Qwen2-VL's image processor: the size is rounded to multiples
    of patch_size x merge_size within [min_pixels, max_pixels] keeping the aspect ratio, and every merge_size^2
    patches of patch_size^2 pixels make one token. `fixed_tokens` > 0 gives every image (every frame group) that
    many tokens instead, whatever its size (LLaVA-1.5: 576). Video: frames are grouped by temporal_patch_size
    (the last group padded), each group costing one image of the frame size. Audio: `tokens_per_second` of
    audio (Whisper-style encoders pooled to 25 a second), at least one token.
    """

    token_id: int  # the placeholder token id (e.g. <|image_pad|>)
    token: str  # its text: what the server inserts for templates that do not render media parts themselves
    patch_size: int = 14
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    fixed_tokens: int = 0
    temporal_patch_size: int = 2
    tokens_per_second: float = 25.0

    def __post_init__(self) -> None:
        if self.token_id < 0 or not self.token:
            raise ValueError(f"a media placeholder needs a token id >= 0 and its text, not {self.token_id!r} "
                             f"{self.token!r}")
        for name in ("patch_size", "merge_size", "min_pixels", "max_pixels", "temporal_patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"MediaTokens.{name} must be >= 1, not {getattr(self, name)}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"MediaTokens.min_pixels ({self.min_pixels}) must not exceed max_pixels "
                             f"({self.max_pixels})")
        if self.fixed_tokens < 0 or not self.tokens_per_second > 0:
            raise ValueError("MediaTokens.fixed_tokens must be >= 0 and tokens_per_second > 0")


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
    supports_logprobs: bool = True
    kv_events: bool = False  # publishes KV events (else the router uses approximate mode)
    modalities: list[str] = field(default_factory=lambda: ["text"])  # input media it takes (chat models)
    # How each medium of `modalities` other than text becomes placeholder tokens (one entry per such medium).
    media_input: dict[str, MediaTokens] = field(default_factory=dict)
    # Disaggregated serving: "agg" (whole requests), "prefill" (prompt + first token, KV exported) or "decode".
    disaggregation_mode: str = "agg"
    kv_endpoint: KvEndpoint | None = None  # a prefill instance's KV transport endpoint
    # What the instance serves: "chat" (generate), "embedding" (embed, vectors of embedding_dim floats) or a media
    # kind, "image" | "video" | "audio" (generate_media; `media` says what it can make).
    kind: str = "chat"
    embedding_dim: int | None = None  # embedding instances: the length of the vectors embed() returns
    matryoshka: bool = False  # embedding instances: `dimensions` (truncate + renormalise) is meaningful
    matryoshka_dimensions: list[int] | None = None  # the only `dimensions` the model was trained for (None = any)
    media: MediaLimits | None = None  # media instances: sizes, steps, formats and inputs it takes
    # LoRA: the instance implements load_lora / unload_lora / list_loras (LoraEngine) and serves
    # EngineRequest.lora_name; max_loras adapters fit its device at once (0 = no limit it reports).
    supports_lora: bool = False
    max_loras: int = 0
    max_lora_rank: int = 0  # largest adapter rank it loads (0 = no limit it reports)

    def __post_init__(self) -> None:
        if self.disaggregation_mode not in DISAGGREGATION_MODES:
            raise ValueError(f"disaggregation_mode {self.disaggregation_mode!r} is not one of "
                             f"{', '.join(DISAGGREGATION_MODES)}")
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(MODEL_KINDS)}")
        if self.kind in MEDIA_KINDS and not isinstance(self.media, MediaLimits):
            raise ValueError(f"a {self.kind} instance's card needs media=MediaLimits(...), not {self.media!r}")
        if self.kind == "embedding" and (not isinstance(self.embedding_dim, int) or self.embedding_dim < 1):
            raise ValueError(f"an embedding instance's card needs embedding_dim >= 1, not {self.embedding_dim!r}")
        for medium in self.modalities:
            if medium != "text" and medium not in MEDIA_INPUT_KINDS:
                raise ValueError(f"modality {medium!r} is not one of text, {', '.join(MEDIA_INPUT_KINDS)}")
            if medium != "text" and medium not in self.media_input:
                raise ValueError(f"the card lists {medium} input in modalities but gives no media_input[{medium!r}] "
                                 "(MediaTokens: its placeholder token and how many tokens an item takes)")
        for medium in self.media_input:
            if medium not in self.modalities:
                raise ValueError(f"media_input[{medium!r}] is given but {medium} is not in modalities")

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
    # Encoder-output (multimodal embedding) cache of engines that keep one: lookups of media items so far.
    embedding_cache_hits: int = 0
    embedding_cache_misses: int = 0
    embedding_cache_bytes: int = 0
    kvbm: KvbmMetrics | None = None  # engines with KV offload tiers (the mocker's --kv-host-* / --kv-disk-*)
    # Disaggregation, decode side (cumulative): KV bytes pulled from prefill instances, and pulls that failed
    # (the instance then computed the prompt itself).
    kv_transfer_bytes: int = 0
    kv_transfer_failures: int = 0


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


@runtime_checkable
class EmbeddingEngine(Engine, Protocol):
    """An engine instance of an embedding model (card.kind == "embedding"): the Engine protocol plus embed()."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingOutput:
        """Embed every input of the batch; cancellation of the awaiting task abandons the request."""
        ...


@dataclass(frozen=True, slots=True)
class LoraAdapter:
    """An adapter as the server hands it to an engine: its name, id (Dynamo's: blake3 of the name) and the local
    directory of its files (adapter_config.json + weights), already fetched and checked by the server."""

    name: str
    lora_id: int
    path: str


@runtime_checkable
class LoraEngine(Engine, Protocol):
    """An engine instance that serves LoRA adapters (card.supports_lora)."""

    async def load_lora(self, adapter: LoraAdapter) -> None:
        """Make the adapter servable on this instance (idempotent per name). Raise EngineError(retryable=False)
        when the files are not an adapter this instance can serve (rank, base model, target modules)."""
        ...

    async def unload_lora(self, name: str) -> None:
        """Forget the adapter (idempotent); requests still running with it may finish first."""
        ...

    def list_loras(self) -> list[str]:
        """Names of the adapters loaded on this instance."""
        ...


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
    kind: str = "chat"  # what to serve: "chat" or "embedding" (only passed to engines registered for that kind),
    # or "image" | "video" | "audio" for media generators (tokenizer is None, vocab_size 0 for those)


EngineFactory = Callable[[EngineArgs], Engine]
