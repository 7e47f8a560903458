"""Builds the LLM(...) keyword arguments from dynamo-mono options plus pass-through TensorRT-LLM LlmArgs flags."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dynamo_mono.api import ConfigError, EngineArgs

from dynamo_mono_trtllm.options import LLM_ARG_NAMES

# LLM keywords this plugin owns: given as pass-through flags they would fight the plugin's own settings.
_OWNED = {
    "model": "--model", "backend": "the PyTorch backend is always used", "skip_tokenizer_init": "dynamo-mono tokenizes",
    "tokenizer": "dynamo-mono tokenizes", "kv_cache_config": "use the KvCacheConfig options (--tokens-per-block, "
    "--free-gpu-memory-fraction, --kv-cache-max-tokens, --enable-block-reuse, --event-buffer-max-size)",
    "enable_iter_perf_stats": "always on (load metrics)", "return_perf_metrics": "always on (cached tokens)",
    "tensor_parallel_size": "--tensor-parallel-size", "max_seq_len": "--max-seq-len",
}


@dataclass(slots=True)
class LlmPlan:
    """What the engine hands TensorRT-LLM: LLM keywords (without kv_cache_config) and the KvCacheConfig fields."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    kv_cache: dict[str, Any] = field(default_factory=dict)
    dp_size: int = 1  # attention-DP ranks (= tensor_parallel_size with --enable-attention-dp), our dp ranks
    block_size: int = 32
    max_seq_len: int | None = None
    kv_events: bool = True


def _value(text: str) -> Any:
    """A pass-through flag's value: JSON when it parses (numbers, true / false, objects), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def passthrough_kwargs(extra: list[str]) -> dict[str, Any]:
    """`--some-field VALUE`, `--some-field=VALUE`, `--flag`, `--no-flag` -> {some_field: VALUE, flag: True/False}.
    TensorRT-LLM itself refuses a name that is not an LlmArgs field (at start, as a ConfigError)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"unexpected argument {arg!r}: TensorRT-LLM options are given as --field-name VALUE")
        name, eq, val = arg[2:].partition("=")
        key = name.replace("-", "_")
        if eq:
            value: Any = _value(val)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = _value(extra[i + 1])
            i += 1
        elif key.startswith("no_"):
            key, value = key[3:], False
        else:
            value = True
        if key in _OWNED:
            raise ConfigError(f"--{name} cannot be passed to TensorRT-LLM here: {_OWNED[key]}")
        if key in out:
            raise ConfigError(f"--{name} given twice")
        out[key] = value
        i += 1
    return out


def build_plan(args: EngineArgs) -> LlmPlan:
    """LLM keywords: pass-through flags, then our options on top (an option and its flag twice is an error)."""
    opts = args.options or {}
    plan = LlmPlan()
    extra = passthrough_kwargs(list(args.extra_args))
    for opt, kw in LLM_ARG_NAMES.items():
        if opts.get(opt) is not None:
            if kw in extra:
                raise ConfigError(f"--{kw.replace('_', '-')} given twice")
            extra[kw] = opts[opt]
    if args.kind != "chat":
        raise ConfigError(f"trtllm serves chat models here, not {args.kind} models")
    tp = int(opts.get("tensor_parallel_size") or 1)
    extra["tensor_parallel_size"] = tp
    plan.dp_size = tp if extra.get("enable_attention_dp") else 1
    plan.max_seq_len = opts.get("max_seq_len") or args.max_model_len or None
    if plan.max_seq_len:
        extra["max_seq_len"] = int(plan.max_seq_len)
    extra["backend"] = "pytorch"
    extra["skip_tokenizer_init"] = True
    extra["enable_iter_perf_stats"] = True
    extra["return_perf_metrics"] = True
    plan.kwargs = extra
    bs = int(opts.get("tokens_per_block") or 32)
    if bs & (bs - 1):
        raise ConfigError(f"--tokens-per-block {bs}: TensorRT-LLM's KV block size is a power of two")
    plan.block_size = bs
    reuse = bool(opts.get("enable_block_reuse", True))
    buffer = int(opts.get("event_buffer_max_size") if opts.get("event_buffer_max_size") is not None else 1024)
    plan.kv_events = bool(opts.get("trtllm_kv_events", True)) and reuse and buffer > 0
    kv: dict[str, Any] = {
        "tokens_per_block": bs,
        "enable_block_reuse": reuse,
        # Routing hashes whole blocks: a partly matched block must not be reused (Dynamo sets the same).
        "enable_partial_reuse": False,
        "event_buffer_max_size": buffer if plan.kv_events else 0,
    }
    if opts.get("free_gpu_memory_fraction") is not None:
        kv["free_gpu_memory_fraction"] = float(opts["free_gpu_memory_fraction"])
    if opts.get("kv_cache_max_tokens") is not None:
        kv["max_tokens"] = int(opts["kv_cache_max_tokens"])
    plan.kv_cache = kv
    return plan
