"""Drives one engine instance in-process through the Engine protocol and times its outputs: TTFT of lone prompts,
ITL of N sequences decoding together."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from dynamo_mono.engine import Engine, EngineRequest, SamplingParams, StopConditions
from dynamo_mono.profiler.plan import DecodePoint


# Output tokens of a prefill measurement. Not 1: an engine may finish a one-token request inside its prefill step
# more cheaply than a request that goes on decoding (vLLM on CPU: 10-25 % lower TTFT), and served requests decode.
PREFILL_OSL = 5


class ProfileError(RuntimeError):
    """The engine failed a profiling request, or a point produced no measurement."""


@dataclass
class Timeline:
    """When one request started and when each of its outputs arrived (with how many tokens it carried)."""

    start: float
    outputs: list[tuple[float, int]] = field(default_factory=list)

    @property
    def ttft_s(self) -> float:
        return self.outputs[0][0] - self.start

    @property
    def first(self) -> float:
        return self.outputs[0][0]

    @property
    def last(self) -> float:
        return self.outputs[-1][0]


class Prompts:
    """Random prompts, each distinct from the first token (no prefix-cache hits between them)."""

    def __init__(self, vocab_size: int, seed: int) -> None:
        self.vocab = max(2, vocab_size)
        self.rng = np.random.default_rng(seed)

    def make(self, n_tokens: int) -> list[int]:
        return self.rng.integers(0, self.vocab, size=n_tokens).tolist()

    def around(self, n_tokens: int, cap: int) -> list[int]:
        """A prompt of n_tokens +- up to 1/8 of it (at most 16): traffic brings prompts of every length, and an
        engine that builds kernels per input shape (vLLM on CPU: ~2.4 ms more TTFT for a 640-token prompt of a
        new length, +17 %) pays that on every new length; the mean length stays n_tokens (below cap)."""
        j = min(16, n_tokens // 8)
        return self.make(min(cap, n_tokens + int(self.rng.integers(-j, j + 1))) if j else n_tokens)


async def run_request(engine: Engine, token_ids: list[int], max_tokens: int) -> Timeline:
    """One request of exactly max_tokens output tokens (EOS ignored), timed as its outputs arrive."""
    req = EngineRequest(request_id=f"profile-{uuid.uuid4().hex[:12]}", token_ids=token_ids,
                        sampling=SamplingParams(temperature=0.0),
                        stop=StopConditions(max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True))
    tl = Timeline(time.perf_counter())
    async for out in engine.generate(req):
        if out.token_ids:
            tl.outputs.append((time.perf_counter(), len(out.token_ids)))
        if out.finish_reason in ("error", "abort"):
            raise ProfileError(f"the engine ended a profiling request with {out.finish_reason}: {out.error or ''}")
        if out.finish_reason is not None:
            break
    if not tl.outputs:
        raise ProfileError("the engine finished a profiling request without producing a token")
    return tl


@dataclass(frozen=True)
class PrefillResult:
    isl: int
    ttft_ms: float  # median over the repeats

    @property
    def thpt(self) -> float:
        return self.isl / (self.ttft_ms / 1000.0) if self.ttft_ms > 0 else 0.0


async def prefill_sample(engine: Engine, prompts: Prompts, isl: int, cap: int) -> float:
    """TTFT (ms) of one prompt of about isl tokens (at most cap) on an otherwise idle instance."""
    return (await run_request(engine, prompts.around(isl, cap), PREFILL_OSL)).ttft_s * 1000.0


async def prefill_batch_sample(engine: Engine, prompts: Prompts, isl: int, batch: int, cap: int) -> float:
    """Time (ms) from submitting `batch` prompts of about isl tokens at once to the last of their first tokens."""
    tls = await asyncio.gather(*(run_request(engine, prompts.around(isl, cap), PREFILL_OSL) for _ in range(batch)))
    return (max(t.first for t in tls) - min(t.start for t in tls)) * 1000.0


def seq_overhead_ms(single: list[PrefillResult], batched: dict[int, float], batch: int, intercept: float) -> float:
    """What each further prompt of a batch costs beyond its own TTFT less the fixed part (the mocker's step model:
    a step pays the fixed part once): the median over the lengths measured both ways, never negative."""
    est = [(batched[r.isl] - r.ttft_ms) / (batch - 1) - (r.ttft_ms - intercept) for r in single if r.isl in batched]
    return max(0.0, statistics.median(est)) if est else 0.0


@dataclass(frozen=True)
class DecodeResult:
    point: DecodePoint
    itl_ms: float
    kv_tokens: float  # average active KV tokens over the measured window

    @property
    def thpt(self) -> float:
        return self.point.concurrency * 1000.0 / self.itl_ms if self.itl_ms > 0 else 0.0


def decode_itl_ms(timelines: list[Timeline]) -> float:
    """Mean time per token while every sequence is decoding: from the last first token to the first last token,
    output gaps of each sequence divided by the tokens they brought."""
    lo = max(t.first for t in timelines)
    hi = min(t.last for t in timelines)
    total_s, tokens = 0.0, 0
    for t in timelines:
        for (t0, _), (t1, n) in zip(t.outputs, t.outputs[1:]):
            if t0 >= lo and t1 <= hi:
                total_s += t1 - t0
                tokens += n
    if tokens == 0:
        raise ProfileError("no decode step ran with every sequence of the point decoding: raise --decode-osl")
    return total_s * 1000.0 / tokens


async def decode_sample(engine: Engine, prompts: Prompts, point: DecodePoint, osl: int, cap: int) -> float:
    """ITL (ms) of one wave: point.concurrency sequences of average context point.context_length decoding
    together."""
    isl = point.isl(osl)
    timelines = await asyncio.gather(*(run_request(engine, prompts.around(isl, cap - osl), osl)
                                       for _ in range(point.concurrency)))
    return decode_itl_ms(list(timelines))
