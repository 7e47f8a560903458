"""Maps dynamo-mono's EngineRequest sampling / stop fields to a vLLM SamplingParams (token in, token out)."""

from __future__ import annotations

import json
from typing import Any

from dynamo_mono.api import EngineRequest

# vLLM guided-decoding keys (old `guided_*` spellings and StructuredOutputsParams field names).
_GUIDED_KEYS = {
    "guided_json": "json", "json": "json",
    "guided_regex": "regex", "regex": "regex",
    "guided_choice": "choice", "choice": "choice",
    "guided_grammar": "grammar", "grammar": "grammar",
    "guided_json_object": "json_object", "json_object": "json_object",
    "structural_tag": "structural_tag",
}


def structured_outputs(response_format: dict | None, guided: dict | None) -> Any:
    """StructuredOutputsParams for an OpenAI response_format or vLLM guided_* fields; None when unconstrained."""
    from vllm.sampling_params import StructuredOutputsParams

    if guided:
        fields: dict[str, Any] = {}
        for key, value in guided.items():
            name = _GUIDED_KEYS.get(key)
            if name is not None and value is not None:
                fields[name] = value
        for opt in ("disable_any_whitespace", "disable_additional_properties", "whitespace_pattern"):
            if opt in guided:
                fields[opt] = guided[opt]
        if any(k in fields for k in set(_GUIDED_KEYS.values())):
            return StructuredOutputsParams(**fields)
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", spec.get("schema_")) if isinstance(spec, dict) else None
        if schema is None:
            return StructuredOutputsParams(json_object=True)
        return StructuredOutputsParams(json=schema if isinstance(schema, (dict, str)) else json.dumps(schema))
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    return None  # "text"


# Our SamplingParams fields that vLLM's SamplingParams takes under the same name and meaning.
_SAME_NAME = ("temperature", "top_p", "min_p", "seed", "presence_penalty", "frequency_penalty",
              "repetition_penalty", "logprobs")


def sampling_params(request: EngineRequest) -> Any:
    """A DELTA-streaming, non-detokenizing SamplingParams for request (stop strings stay with the server)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    s = request.sampling
    st = request.stop
    kw: dict[str, Any] = {
        "n": 1,
        "max_tokens": st.max_tokens,
        "min_tokens": st.min_tokens or 0,
        "ignore_eos": bool(st.ignore_eos),
        "detokenize": False,
        "output_kind": RequestOutputKind.DELTA,
        "skip_special_tokens": False,
    }
    if st.stop_token_ids:
        kw["stop_token_ids"] = list(st.stop_token_ids)
    for name in _SAME_NAME:  # None = the engine's default
        value = getattr(s, name)
        if value is not None:
            kw[name] = value
    if s.top_k:  # OpenAI-style None / 0 = off, which is vLLM's default (0)
        kw["top_k"] = s.top_k
    so = structured_outputs(s.response_format, s.guided)
    if so is not None:
        kw["structured_outputs"] = so
    return SamplingParams(**kw)
