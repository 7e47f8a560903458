"""Instance pool details that a user notices: how priority reaches each kind of engine."""

from __future__ import annotations

from dynamo_mono.engine import ModelCard
from dynamo_mono.serving.pool import engine_priority


def test_priority_translated_per_engine() -> None:
    vllm_like = ModelCard("m", 128, 16, supports_priority=True)
    sglang_like = ModelCard("m", 128, 16, supports_priority=True, priority_higher_is_urgent=True)
    none = ModelCard("m", 128, 16)
    assert engine_priority(vllm_like, -5) == -5
    assert engine_priority(sglang_like, -5) == 5
    assert engine_priority(none, -5) == 0
