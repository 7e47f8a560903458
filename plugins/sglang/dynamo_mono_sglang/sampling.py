"""Maps dynamo-mono's EngineRequest sampling / stop fields to SGLang's sampling_params dict (token in, token out)."""

from __future__ import annotations

import json
from typing import Any

from dynamo_mono.api import EngineRequest


class Refused(ValueError):
    """A request SGLang cannot serve as asked (the engine would do something else): a 400, never a silent change."""


# Our SamplingParams fields that SGLang's SamplingParams takes under the same name and meaning.
_SAME_NAME = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")


def _grammar(response_format: dict | None, guided: dict | None) -> dict[str, str]:
    """SGLang's json_schema / regex / ebnf constraint for an OpenAI response_format or guided_* fields."""
    if guided:
        given = {k: v for k, v in guided.items() if v is not None}
        if "guided_json" in given or "json" in given:
            schema = given.get("guided_json", given.get("json"))
            return {"json_schema": schema if isinstance(schema, str) else json.dumps(schema)}
        if "guided_regex" in given or "regex" in given:
            return {"regex": given.get("guided_regex", given.get("regex"))}
        if "guided_grammar" in given or "grammar" in given:
            return {"ebnf": given.get("guided_grammar", given.get("grammar"))}
        if given:
            raise Refused(f"sglang: guided decoding by {', '.join(sorted(given))} is not supported "
                          "(json, regex and grammar are)")
    if not response_format:
        return {}
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", spec.get("schema_")) if isinstance(spec, dict) else None
        if schema is None:
            return {"json_schema": json.dumps({"type": "object"})}
        return {"json_schema": schema if isinstance(schema, str) else json.dumps(schema)}
    if kind == "json_object":
        return {"json_schema": json.dumps({"type": "object"})}
    return {}


def sampling_params(request: EngineRequest, eos_token_ids: list[int]) -> dict[str, Any]:
    """SGLang's sampling_params for one choice (n is fanned out by the server; stop strings stay with it)."""
    s = request.sampling
    st = request.stop
    if st.ignore_eos and st.stop_token_ids:
        # SGLang's ignore_eos also switches off stop_token_ids (Req._check_token_based_finish).
        raise Refused("sglang: ignore_eos also disables stop_token_ids in SGLang; send one or the other")
    out: dict[str, Any] = {"max_new_tokens": st.max_tokens, "ignore_eos": bool(st.ignore_eos)}
    if st.min_tokens:
        out["min_new_tokens"] = st.min_tokens
    stop_ids = set(st.stop_token_ids) | set(st.eos_token_ids) | set(eos_token_ids)
    if stop_ids and not st.ignore_eos:
        out["stop_token_ids"] = sorted(stop_ids)
    for name in _SAME_NAME:
        value = getattr(s, name)
        if value is not None:
            out[name] = value
    if s.top_k:  # None / 0 = off, SGLang's default
        out["top_k"] = s.top_k
    if s.seed is not None:
        out["sampling_seed"] = s.seed
    out.update(_grammar(s.response_format, s.guided))
    return out
