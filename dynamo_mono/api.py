"""The public plugin API: everything a plugin may import from dynamo-mono; every other module is internal.

    from dynamo_mono.api import EngineArgs, EngineOutput, ModelCard, Option, hookimpl

Names here keep their meaning across releases; an internal module may move or change without notice.
"""

from __future__ import annotations

from dynamo_mono.assets import TINY_CHATML_DIR
from dynamo_mono.block_hash import block_hashes
from dynamo_mono.config import ConfigError, Option
from dynamo_mono.engine import (
    ENGINE_KINDS,
    EmbeddingEngine,
    EmbeddingOutput,
    EmbeddingRequest,
    Engine,
    EngineArgs,
    EngineError,
    EngineFactory,
    EngineOutput,
    EngineRequest,
    InstanceKey,
    KvEndpoint,
    KvEventSink,
    KvTransferParams,
    LoadMetrics,
    ModelCard,
    SamplingParams,
    StopConditions,
    TokenLogprob,
)
from dynamo_mono.hookspecs import (
    RegisterEngine,
    RegisterModality,
    RegisterParser,
    RegisterTransport,
    hookimpl,
)
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEvent, KvEventBatch
from dynamo_mono.parsers.base import (
    ParsedDelta,
    ReasoningParser,
    ToolCallDelta,
    ToolCallParser,
    new_call_id,
    partial_suffix,
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
    # configuration
    "Option",
    "ConfigError",
    # engines
    "Engine",
    "EmbeddingEngine",
    "EmbeddingOutput",
    "EmbeddingRequest",
    "ENGINE_KINDS",
    "EngineArgs",
    "EngineError",
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
    # KV events
    "KvEventSink",
    "KvEventBatch",
    "KvEvent",
    "BlockStored",
    "BlockRemoved",
    "AllBlocksCleared",
    "block_hashes",
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
