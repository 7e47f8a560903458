"""The public plugin API: everything a plugin may import from dynamo-mono; every other module is internal.

    from dynamo_mono.api import EngineArgs, EngineOutput, ModelCard, Option, hookimpl

Names here keep their meaning across releases; an internal module may move or change without notice.
"""

from __future__ import annotations

from dynamo_mono.assets import TINY_CHATML_DIR
from dynamo_mono.block_hash import MediaSpan, block_hashes
from dynamo_mono.config import ConfigError, Option
from dynamo_mono.engine import (
    ENGINE_KINDS,
    MEDIA_INPUT_KINDS,
    MEDIA_KINDS,
    MODEL_KINDS,
    EmbeddingEngine,
    EmbeddingOutput,
    EmbeddingRequest,
    Engine,
    EngineArgs,
    EngineError,
    RequestRejected,
    EngineFactory,
    EngineOutput,
    EngineRequest,
    InstanceKey,
    KvEndpoint,
    KvEventSink,
    KvTransferParams,
    LoadMetrics,
    LoraAdapter,
    LoraEngine,
    MediaItem,
    MediaLimits,
    MediaTokens,
    ModelCard,
    SamplingParams,
    StopConditions,
    TokenLogprob,
)
from dynamo_mono.hookspecs import (
    Frontend,
    RegisterEngine,
    RegisterFrontend,
    RegisterModality,
    RegisterParser,
    RegisterTransport,
    hookimpl,
)
from dynamo_mono.media.contract import MediaFile, MediaGenerator, MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.media.encode import EncodeError, encode_audio, encode_image, encode_images, encode_video, output_formats
from dynamo_mono.media.tokens import collapse_placeholders, item_tokens, qwen2_vl_media_tokens
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent, KvEventBatch
from dynamo_mono.parsers.base import (
    ParsedDelta,
    ReasoningParser,
    ToolCallDelta,
    ToolCallParser,
    new_call_id,
    partial_suffix,
)
from dynamo_mono.serving.errors import (
    ContextLengthExceeded,
    EngineFailed,
    InvalidRequest,
    ModelNotFound,
    NoInstance,
    QueueFull,
    QueueTimeout,
    RequestTimedOut,
    ServingError,
)
from dynamo_mono.transports.framing import FramedConnection
from dynamo_mono.transports.kv import KvTransferError, KvTransport, Published
from dynamo_mono.transports.tcp import connect as connect_framed

__all__ = [
    # hooks and the register(...) signatures they hand a plugin
    "hookimpl",
    "RegisterEngine",
    "RegisterParser",
    "RegisterModality",
    "RegisterTransport",
    "RegisterFrontend",
    # frontends: the server state they are built with and the one request path they share with HTTP
    "Frontend",
    "ServerState",
    "ServedModel",
    "ServedRequest",
    "REQUEST_FAILURES",
    "GenParams",
    "Generation",
    "Step",
    "check_completion",
    "completion_generation",
    # domain errors a request can end with (each frontend maps them to its statuses)
    "ServingError",
    "InvalidRequest",
    "ContextLengthExceeded",
    "ModelNotFound",
    "QueueFull",
    "QueueTimeout",
    "NoInstance",
    "RequestTimedOut",
    "EngineFailed",
    # configuration
    "Option",
    "ConfigError",
    # engines
    "Engine",
    "EmbeddingEngine",
    "EmbeddingOutput",
    "EmbeddingRequest",
    "ENGINE_KINDS",
    "LoraAdapter",
    "LoraEngine",
    "MEDIA_KINDS",
    "MODEL_KINDS",
    "MediaLimits",
    "MediaFile",
    "MediaGenerator",
    "MediaOutput",
    "MediaProgress",
    "MediaRequest",
    "EncodeError",
    "encode_audio",
    "encode_image",
    "encode_images",
    "encode_video",
    "output_formats",
    "EngineArgs",
    "EngineError",
    "RequestRejected",
    "EngineFactory",
    "EngineOutput",
    "EngineRequest",
    "InstanceKey",
    "KvEndpoint",
    "KvTransferParams",
    "LoadMetrics",
    "ModelCard",
    "SamplingParams",
    "StopConditions",
    "TokenLogprob",
    # media input of chat models: the typed items of a request and how a card says they become tokens
    "MEDIA_INPUT_KINDS",
    "MediaItem",
    "MediaTokens",
    "item_tokens",
    "collapse_placeholders",
    "qwen2_vl_media_tokens",
    # KV events
    "KvEventSink",
    "KvEventBatch",
    "KvEvent",
    "BlockStored",
    "BlockRemoved",
    "AllBlocksCleared",
    "block_hashes",
    "MediaSpan",
    # transports
    "KvTransport",
    "KvTransferError",
    "Published",
    "FramedConnection",
    "connect_framed",
    # parsers
    "ReasoningParser",
    "ToolCallParser",
    "ToolCallDelta",
    "ParsedDelta",
    "partial_suffix",
    "new_call_id",
    # testing: the embedded tiny ChatML tokenizer directory (no download needed)
    "TINY_CHATML_DIR",
]

# What frontends use (the server state, the shared request path) pulls in the server's modules (aiohttp,
# pydantic): imported on first use, so engine and parser plugins importing this module stay light.
_FRONTEND_NAMES = {
    "ServerState": "dynamo_mono.http.state",
    "ServedModel": "dynamo_mono.serving.model",
    "ServedRequest": "dynamo_mono.serving.request",
    "REQUEST_FAILURES": "dynamo_mono.serving.request",
    "GenParams": "dynamo_mono.serving.params",
    "Generation": "dynamo_mono.serving.generation",
    "Step": "dynamo_mono.serving.choice",
    "check_completion": "dynamo_mono.serving.completion",
    "completion_generation": "dynamo_mono.serving.completion",
}


def __getattr__(name: str) -> object:
    module = _FRONTEND_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'dynamo_mono.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
