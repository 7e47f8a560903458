"""Creating served models: each with its own router, instance pool, admission queue and gauges."""

from __future__ import annotations

from typing import Any

from dynamo_mono.config import Settings
from dynamo_mono.preprocess.model_dir import ModelInfo
from dynamo_mono.router.router import Router
from dynamo_mono.serving.admission import AdmissionQueue
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.pool import InstancePool

# Block size a model's router starts with; the first instance that joins sets the real one.
DEFAULT_BLOCK_SIZE = 16


def new_served_model(state: Any, info: ModelInfo, *, kind: str, reasoning_parser: str | None,
                     tool_call_parser: str | None, configured: bool) -> ServedModel:
    """A model with its own router and instance pool (no instances yet)."""
    s = state.settings
    router = Router(s, block_size=DEFAULT_BLOCK_SIZE, registry=state.metrics.registry, model=info.name)
    pool = InstancePool(info.name, router, migration_limit=s.migration_limit, metrics=state.metrics)
    pool.conditional_disagg = s.router_conditional_disagg
    pool.disagg_min_prefill_tokens = s.disagg_min_prefill_tokens
    pool.disagg_prefill_timeout = s.disagg_prefill_timeout
    return ServedModel(info.name, info, pool, kind=kind, configured=configured, reasoning_parser=reasoning_parser,
                       tool_call_parser=tool_call_parser,
                       admission=admission_queue(s, s.max_inflight_per_model, f"model '{info.name}'"))


def admission_queue(settings: Settings, limit: int | None, name: str) -> AdmissionQueue:
    return AdmissionQueue(limit, max_queue=settings.max_queue_length, max_wait=settings.max_queue_wait, name=name)


def set_model_gauges(state: Any, model: ServedModel) -> None:
    """The per-model configuration gauges (context length, block size, batch limits)."""
    m = state.metrics
    card = model.pool.card()
    m.model_context_length.labels(model.name).set(model.max_model_len)
    m.model_migration_limit.labels(model.name).set(state.settings.migration_limit)
    if card is not None:
        m.model_block_size.labels(model.name).set(card.block_size)
        if card.max_num_seqs:
            m.model_max_num_seqs.labels(model.name).set(card.max_num_seqs)
        if card.max_num_batched_tokens:
            m.model_max_num_batched_tokens.labels(model.name).set(card.max_num_batched_tokens)


