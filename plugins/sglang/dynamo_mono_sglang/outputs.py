"""Turns SGLang's incremental stream chunks ({output_ids, meta_info}) into dynamo-mono EngineOutputs."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import EngineOutput, TokenLogprob


def logprobs(meta: dict[str, Any], n_tokens: int) -> list[TokenLogprob]:
    """TokenLogprobs from meta_info's output_token_logprobs [(logprob, token_id, text|None)] and output_top_logprobs
    (per position a list of the same tuples, or None): the chunk's slice (incremental streaming)."""
    sampled = meta.get("output_token_logprobs") or []
    tops = meta.get("output_top_logprobs") or []
    out = []
    for j in range(n_tokens):
        lp, tok = (sampled[j][0], sampled[j][1]) if j < len(sampled) else (0.0, -1)
        top = tops[j] if j < len(tops) and tops[j] else []
        out.append(TokenLogprob(int(tok), float(lp), [(int(t[1]), float(t[0])) for t in top]))
    return out


def finish(reason: dict[str, Any] | None, aborted_by_us: bool) -> tuple[str | None, str | None]:
    """(our finish_reason, error message) for SGLang's finish_reason dict (None = still running)."""
    if reason is None:
        return None, None
    kind = reason.get("type")
    if kind in ("stop", "length"):
        return kind, None
    if kind == "abort":
        if aborted_by_us:
            return "abort", None
        return "error", f"sglang: request aborted by the engine: {reason.get('message') or 'aborted'}"
    return "error", f"sglang: unknown finish reason {reason!r}"


def to_output(chunk: dict[str, Any], *, first: bool, prompt_len: int, n_top: int | None, stop_ids: set[int],
              aborted_by_us: bool = False) -> EngineOutput:
    """One EngineOutput for one chunk: the chunk's new tokens; on the first chunk the prompt / cached counts; at the
    end our finish reason, with the matched stop token (SGLang keeps it in output_ids) reported apart."""
    meta = chunk["meta_info"]
    toks = list(chunk.get("output_ids") or ())
    eo = EngineOutput(token_ids=toks)
    if n_top is not None and toks:
        eo.logprobs = logprobs(meta, len(toks))
    if first:
        eo.prompt_tokens = prompt_len
        eo.cached_tokens = int(meta.get("cached_tokens") or 0)
    reason, error = finish(meta.get("finish_reason"), aborted_by_us)
    if reason == "stop":
        matched = meta["finish_reason"].get("matched")
        if isinstance(matched, int) and toks and toks[-1] == matched and matched in stop_ids:
            eo.stop_token_id = toks.pop()
            if eo.logprobs:
                eo.logprobs.pop()
    eo.finish_reason = reason
    eo.error = error
    return eo
