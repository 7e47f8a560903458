"""Engine-kit target for a real SGLang on a GPU machine: `python -m dynamo_mono.testing --target
dynamo_mono_sglang.kit:REAL_TARGET` (gpu-smoke.sh sets DYN_KIT_SGLANG_MODEL / DYN_KIT_SGLANG_DP / DYN_KIT_VOCAB)."""

from __future__ import annotations

import os

from dynamo_mono.testing import KitTarget

_DP = int(os.environ.get("DYN_KIT_SGLANG_DP", "1"))
_CAPS = {"logprobs", "n", "priority", "kv_events"} | ({"dp_rank"} if _DP > 1 else set())

REAL_TARGET = KitTarget(
    name="sglang",
    serve_args=("--engine", "sglang", "--model", os.environ.get("DYN_KIT_SGLANG_MODEL", ""),
                "--served-model-name", "kit", "--page-size", "16", "--dp-size", str(_DP),
                "--max-total-tokens", os.environ.get("DYN_KIT_SGLANG_KV_TOKENS", "16384"),
                "--enable-priority-scheduling", "--max-model-len", "4096"),
    capabilities=frozenset(_CAPS),
    requires=("sglang",),
    skip_reason="sglang is not installed (GPU machines: plugins/sglang/gpu-smoke.sh)",
    block_size=16,
    vocab_size=int(os.environ.get("DYN_KIT_VOCAB", "2636")),
    start_timeout=900,
    max_tokens_long=3000,
)
