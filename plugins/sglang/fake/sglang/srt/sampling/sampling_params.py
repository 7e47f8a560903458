"""FAKE sglang.srt.sampling.sampling_params (0.5.23): the sampling_params keys SamplingParams accepts."""

from __future__ import annotations

TOP_K_ALL = 1 << 30

# SamplingParams' API fields (msgspec Struct, kw_only): any other key raises TypeError.
FIELDS = {
    "max_new_tokens": 128, "stop": None, "stop_token_ids": None, "stop_regex": None, "temperature": 1.0,
    "top_p": 1.0, "top_k": TOP_K_ALL, "min_p": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
    "repetition_penalty": 1.0, "min_new_tokens": 0, "n": 1, "beam_width": None, "json_schema": None, "regex": None,
    "ebnf": None, "structural_tag": None, "ignore_eos": False, "skip_special_tokens": True,
    "spaces_between_special_tokens": True, "no_stop_trim": False, "stream_interval": None, "logit_bias": None,
    "sampling_seed": None, "custom_params": None, "watermark": None,
}


def normalize(params: dict | None) -> dict:
    """Defaults filled in; TypeError on an unknown key; ValueError on a value SamplingParams.verify rejects."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        raise TypeError(f"Unexpected keyword argument {unknown[0]!r}")
    out = {**FIELDS, **{k: v for k, v in params.items() if v is not None}}
    if out["temperature"] < 0:
        raise ValueError(f"temperature must be a non-negative finite number, got {out['temperature']}.")
    if not 0.0 < out["top_p"] <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {out['top_p']}.")
    if out["max_new_tokens"] is not None and out["max_new_tokens"] < 0:
        raise ValueError(f"max_new_tokens must be at least 0, got {out['max_new_tokens']}.")
    return out
