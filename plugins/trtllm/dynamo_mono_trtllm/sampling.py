"""Maps dynamo-mono's EngineRequest sampling / stop fields to TensorRT-LLM's SamplingParams (token ids in and out)."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import EngineRequest

# Our SamplingParams fields that TensorRT-LLM's SamplingParams takes under the same name and meaning.
_SAME_NAME = ("temperature", "top_p", "min_p", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty")


def refusal(request: EngineRequest) -> str | None:
    """Why this plugin cannot serve the request as asked (None = it can): refused, never silently dropped."""
    if request.priority:
        return "TensorRT-LLM's LLM API has no request priority"
    if request.media:
        return "this plugin sends token ids only; media input is not wired for TensorRT-LLM"
    if request.lora_name is not None:
        return "LoRA adapters are not wired for TensorRT-LLM"
    if request.kv_transfer is not None or request.kv_export_key is not None:
        return "disaggregated prefill / decode is not wired for TensorRT-LLM"
    s = request.sampling
    if s.response_format and s.response_format.get("type") not in (None, "text"):
        return "structured output (response_format) is not wired for TensorRT-LLM"
    if s.guided:
        return "guided decoding is not wired for TensorRT-LLM"
    return None


def end_and_stop_ids(request: EngineRequest, eos_ids: list[int]) -> tuple[int, list[int]]:
    """TensorRT-LLM takes one end id: the first EOS; other EOS ids and the request's stop ids are stop tokens."""
    eos = list(request.stop.eos_token_ids or eos_ids)
    if not eos:
        raise ValueError("the model has no EOS token id; TensorRT-LLM needs an end_id without its tokenizer")
    stops = list(request.stop.stop_token_ids)
    if not request.stop.ignore_eos:
        stops += [e for e in eos[1:] if e not in stops]
    return eos[0], stops


def sampling_params(request: EngineRequest, eos_ids: list[int]) -> Any:
    """A SamplingParams for the request: no detokenization (we detokenize), stop strings stay with the server."""
    from tensorrt_llm import SamplingParams

    s = request.sampling
    st = request.stop
    end_id, stops = end_and_stop_ids(request, eos_ids)
    kw: dict[str, Any] = {
        "end_id": end_id,
        "max_tokens": st.max_tokens,
        "n": s.n,
        "best_of": s.n,
        "ignore_eos": bool(st.ignore_eos),
        "detokenize": False,
        "return_perf_metrics": True,
    }
    if stops:
        kw["stop_token_ids"] = stops
    if st.min_tokens:
        kw["min_tokens"] = st.min_tokens
    for name in _SAME_NAME:  # None = the engine's default
        value = getattr(s, name)
        if value is not None:
            kw[name] = value
    if s.top_k:  # OpenAI-style None / 0 = off (TensorRT-LLM: None = all logits)
        kw["top_k"] = s.top_k
    if s.logprobs is not None:
        kw["logprobs"] = max(1, s.logprobs)  # 0 top alternatives still needs the sampled token's logprob
    return SamplingParams(**kw)
