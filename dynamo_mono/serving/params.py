"""API-neutral generation parameters, built from an OpenAI (or Anthropic) request once per request."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from dynamo_mono.engine import EngineRequest, MediaItem, ModelCard, SamplingParams, StopConditions
from dynamo_mono.serving.errors import InvalidRequest


@dataclass(slots=True)
class GenParams:
    """Everything about how to generate, independent of which API asked."""

    max_tokens: int | None = None
    min_tokens: int = 0
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None = off, else number of top alternatives
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    priority: int = 0
    latency_sensitivity: float | None = None
    expected_output_tokens: int | None = None
    annotations: list[str] = field(default_factory=list)
    worker_id: int | None = None
    dp_rank: int | None = None
    response_format: dict | None = None
    guided: dict | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None


def from_openai(req: Any, *, logprobs: int | None) -> GenParams:
    """Common fields of ChatCompletionRequest / CompletionRequest (validated already)."""
    nv = req.nvext
    hints = nv.agent_hints if nv is not None else None
    guided = {k: v for k, v in (("json", req.guided_json), ("regex", req.guided_regex),
                                ("choice", req.guided_choice), ("grammar", req.guided_grammar)) if v is not None}
    if req.structured_outputs:
        guided.update(req.structured_outputs)
    priority = req.priority if req.priority is not None else 0
    if hints is not None and hints.priority is not None:
        priority = hints.priority
    return GenParams(
        max_tokens=req.effective_max_tokens(),
        min_tokens=req.min_tokens,
        n=req.n,
        temperature=0.0 if nv is not None and nv.greed_sampling else req.temperature,
        top_p=req.top_p,
        top_k=(nv.top_k if nv is not None and nv.top_k is not None else req.top_k),
        min_p=req.min_p,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=(nv.repetition_penalty if nv is not None and nv.repetition_penalty is not None
                            else req.repetition_penalty),
        stop=req.stop_list(),
        stop_token_ids=list(req.stop_token_ids or []),
        ignore_eos=bool(req.ignore_eos or (nv is not None and nv.ignore_eos)),
        logprobs=logprobs,
        skip_special_tokens=req.skip_special_tokens,
        include_stop_str_in_output=req.include_stop_str_in_output,
        priority=priority,
        latency_sensitivity=hints.latency_sensitivity if hints is not None else None,
        expected_output_tokens=hints.osl if hints is not None else None,
        annotations=list(nv.annotations or []) if nv is not None else [],
        worker_id=nv.backend_instance_id if nv is not None else None,
        dp_rank=nv.dp_rank if nv is not None else None,
        response_format=req.response_format,
        guided=guided or None,
    )


def check_limits(p: GenParams, *, max_n: int, max_stops: int, max_top_logprobs: int, max_stop_chars: int) -> None:
    """Configurable per-request limits (400 with the numbers)."""
    if p.n > max_n:
        raise InvalidRequest(f"n={p.n} exceeds the limit of {max_n}", param="n")
    if len(p.stop) > max_stops:
        raise InvalidRequest(f"{len(p.stop)} stop sequences exceed the limit of {max_stops}", param="stop")
    longest = max(map(len, p.stop), default=0)
    if longest > max_stop_chars:
        raise InvalidRequest(f"a stop sequence of {longest} characters exceeds the limit of {max_stop_chars}",
                             param="stop")
    if p.logprobs is not None and p.logprobs > max_top_logprobs:
        raise InvalidRequest(f"top_logprobs={p.logprobs} exceeds the limit of {max_top_logprobs}",
                             param="top_logprobs")
    if p.max_tokens is not None and p.min_tokens > p.max_tokens:
        raise InvalidRequest(f"min_tokens={p.min_tokens} is larger than max_tokens={p.max_tokens}",
                             param="min_tokens")


def check_capabilities(p: GenParams, card: ModelCard | None) -> None:
    """Refuse what the model's engine cannot do, instead of silently ignoring it (no card: no instance yet)."""
    if card is None:
        return
    if p.logprobs is not None and not card.supports_logprobs:
        raise InvalidRequest(f"model '{card.name}' does not return logprobs", param="logprobs")


_ENGINE_SEQ = itertools.count(1)


def engine_id_space(start: int) -> None:
    """Number this process's engine request ids from `start` (HTTP processes of one core: disjoint spaces)."""
    global _ENGINE_SEQ
    _ENGINE_SEQ = itertools.count(start)


def engine_requests(request_id: str, model: str, prompt_ids: list[int], block_hashes: list[int],
                    p: GenParams, max_tokens: int, eos_token_ids: list[int],
                    media: list[MediaItem] | None = None, lora_name: str | None = None) -> list[EngineRequest]:
    """One EngineRequest per choice (the frontend fans out n), with server-unique ids.

    `request_id` comes from the client (x-request-id, body `request_id`), which may reuse one across
    concurrent requests; the router's load tracking and engine aborts are keyed by it, so each gets a suffix.
    """
    request_id = f"{request_id}.{next(_ENGINE_SEQ):x}"
    out = []
    for i in range(p.n):
        sampling = SamplingParams(
            temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, min_p=p.min_p,
            seed=p.seed, presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
            repetition_penalty=p.repetition_penalty, n=1, logprobs=p.logprobs,
            response_format=p.response_format, guided=p.guided,
        )
        stop = StopConditions(max_tokens=max_tokens, min_tokens=p.min_tokens, stop_token_ids=list(p.stop_token_ids),
                              eos_token_ids=list(eos_token_ids), ignore_eos=p.ignore_eos)
        out.append(EngineRequest(
            request_id=request_id if p.n == 1 else f"{request_id}-{i}",
            token_ids=prompt_ids, sampling=sampling, stop=stop, model=model, priority=p.priority,
            worker_id=p.worker_id, dp_rank=p.dp_rank, block_hashes=block_hashes,
            expected_output_tokens=p.expected_output_tokens,
            annotations=list(p.annotations), tools=p.tools, tool_choice=p.tool_choice, choice_index=i,
            media=list(media or ()), lora_name=lora_name,
        ))
    return out
