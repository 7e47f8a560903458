"""Completion requests, API-neutral: prompts (text or token ids) → tokens → choices → a Generation."""

from __future__ import annotations

from typing import Any

from dynamo_mono.media.tokens import PlaceholderError, expand_placeholders
from dynamo_mono.serving.chat import admission_queues
from dynamo_mono.serving.choice import ChoiceState
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.params import GenParams, check_limits, check_capabilities, engine_requests

# Choices of one completion request (prompts x n) may be this many times --max-n.
PROMPTS_FACTOR = 16


def check_completion(settings: Any, model: ServedModel, params: GenParams, num_prompts: int) -> None:
    """Per-request limits of a completion request, before any tokenization."""
    s = settings
    check_limits(params, max_n=s.max_n, max_stops=s.max_stop_sequences, max_top_logprobs=s.max_top_logprobs,
                 max_stop_chars=s.max_stop_chars)
    check_capabilities(params, model.pool.card())
    if num_prompts * params.n > s.max_n * PROMPTS_FACTOR:
        raise InvalidRequest(f"{num_prompts} prompts x n={params.n} is too many choices", param="prompt")


async def completion_generation(state: Any, model: ServedModel, prompts: list[str | list[int]], params: GenParams,
                                rid: str, *, echo: bool) -> Generation:
    """Tokenize every prompt and build one Generation over all prompts x n choices."""
    vocab = model.tokenizer.vocab_size
    s = state.settings
    reqs, states, echoes, prompt_tokens = [], [], [], 0
    card = model.pool.card()
    specs = card.media_input if card is not None else {}
    for pi, p in enumerate(prompts):
        if isinstance(p, str):
            ids, text = await model.tokenize(p), p
        else:
            if any(t >= vocab for t in p):
                raise InvalidRequest(f"token id out of range (vocab size {vocab})", param="prompt")
            ids, text = list(p), None
        if not ids:
            raise InvalidRequest("prompt is empty", param="prompt")
        if specs:  # a media model: a placeholder without its media would make the engine read a missing embedding
            try:
                expand_placeholders(ids, (), (), specs)
            except PlaceholderError as exc:
                raise InvalidRequest(f"{exc} (completions take no media; use /v1/chat/completions)",
                                     param="prompt") from None
        prompt = model.make_prompt(ids, text)
        prompt_tokens += len(ids)
        max_tokens = model.resolve_max_tokens(len(ids), params, s.max_tokens_limit)
        sub = engine_requests(f"{rid}-p{pi}" if len(prompts) > 1 else rid, model.name, ids, prompt.block_hashes,
                              params, max_tokens, model.info.eos_token_ids, lora_name=model.lora_name)
        for ci, r in enumerate(sub):
            reqs.append(r)
            states.append(ChoiceState(pi * params.n + ci, model.tokenizer, stops=params.stop,
                                      skip_special_tokens=params.skip_special_tokens,
                                      want_logprobs=params.logprobs is not None,
                                      include_stop=params.include_stop_str_in_output, prompt_tail=ids[-5:],
                                      stop_conditions=r.stop))
            echoes.append((text if text is not None else model.tokenizer.decode(ids)) if echo else "")
    return Generation(model.pool, reqs, states, prompt_tokens, metrics=state.metrics, model=model.name,
                      admission=admission_queues(state, model), latency_sensitivity=params.latency_sensitivity,
                      echoes=echoes if echo else None)
