"""Which points a profile measures: prompt lengths for prefill, (context length, concurrency) pairs for decode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamo_mono.config import ConfigError, Settings
from dynamo_mono.engine import ModelCard
from dynamo_mono.profiler.options import parse_int_list

MIN_PREFILL_ISL = 64
MIN_DECODE_CONTEXT = 128
# Share of the KV cache the decode sweep fills at most: engines keep a watermark of free blocks (the mocker 1 %,
# vLLM none), and a sequence that waits for blocks would leave the point's ITL window without all of them.
KV_FILL = 0.95


@dataclass(frozen=True)
class DecodePoint:
    context_length: int  # average context while decoding: ISL + OSL / 2
    concurrency: int

    def isl(self, osl: int) -> int:
        return max(1, self.context_length - osl // 2)

    def kv_tokens(self, osl: int) -> int:
        """KV tokens the point holds at its end (every sequence at ISL + OSL)."""
        return self.concurrency * (self.isl(osl) + osl)

    def blocks_per_seq(self, osl: int, block_size: int) -> int:
        """KV blocks one sequence may hold at its end, its prompt as long as measure.Prompts.around makes it."""
        isl = self.isl(osl)
        return -(-(isl + min(16, isl // 8) + osl) // block_size)


@dataclass(frozen=True)
class SweepPlan:
    prefill_isl: list[int]
    prefill_batch_isl: list[int]  # lengths also timed as a batch of prefill_batch prompts (their sum fits a step)
    prefill_batch: int
    decode: list[DecodePoint]
    decode_osl: int
    repeats: int
    warmup: int
    max_kv_tokens: int
    max_context_length: int


def max_kv_tokens(card: ModelCard) -> int:
    """KV tokens one instance holds (all its dp ranks); ConfigError when the engine does not report it."""
    if not card.total_kv_blocks:
        raise ConfigError("the engine instance does not report its KV cache size (card.total_kv_blocks): "
                          "the decode sweep cannot place its points")
    return int(card.total_kv_blocks) * int(card.block_size)


def _geometric(lo: int, hi: int, n: int) -> list[int]:
    if hi <= lo or n == 1:
        return [hi]
    return sorted({int(round(x)) for x in np.geomspace(lo, hi, n)})


def plan_sweep(settings: Settings, card: ModelCard) -> SweepPlan:
    """The points to measure for this instance; ConfigError on a given point the instance cannot hold."""
    osl = int(settings.decode_osl)
    kv_cap = max_kv_tokens(card)
    model_cap = int(card.max_model_len)
    max_ctx = settings.max_context_length or min(model_cap - 1, kv_cap)
    if settings.max_context_length and (max_ctx >= model_cap or max_ctx > kv_cap):
        raise ConfigError(f"invalid --max-context-length={max_ctx}: the instance holds contexts up to "
                          f"{min(model_cap - 1, kv_cap)} tokens (model length {model_cap}, KV cache {kv_cap})")
    isl = parse_int_list(settings.prefill_isl, "--prefill-isl")
    if isl is None:
        isl = _geometric(min(MIN_PREFILL_ISL, max_ctx), max_ctx, settings.prefill_interpolation_granularity)
    elif isl[-1] > max_ctx:
        raise ConfigError(f"invalid --prefill-isl: {isl[-1]} is longer than the longest context profiled "
                          f"({max_ctx})")
    contexts = parse_int_list(settings.decode_context_length, "--decode-context-length")
    gran = settings.decode_interpolation_granularity
    if contexts is None:
        hi = max(max_ctx // 2, osl)
        contexts = _geometric(min(MIN_DECODE_CONTEXT, hi), hi, gran)
    elif contexts[-1] - osl // 2 + osl > max_ctx:
        raise ConfigError(f"invalid --decode-context-length: {contexts[-1]} + --decode-osl/2 is longer than the "
                          f"longest context profiled ({max_ctx})")
    concurrencies = parse_int_list(settings.decode_concurrency, "--decode-concurrency")
    max_seqs = int(card.max_num_seqs or 1 << 30)
    points: list[DecodePoint] = []
    for c in contexts:
        per_seq = DecodePoint(c, 1).blocks_per_seq(osl, card.block_size) * card.block_size
        fit = min(max_seqs, int(kv_cap * KV_FILL) // per_seq)
        if fit < 1:
            raise ConfigError(f"decode context length {c}: one sequence ({per_seq} KV tokens) does not fit the KV "
                              f"cache ({kv_cap} tokens)")
        if concurrencies is None:
            counts = _geometric(1, fit, gran)
        else:
            too_many = [n for n in concurrencies if n > fit]
            if too_many:
                raise ConfigError(f"invalid --decode-concurrency: {too_many[0]} sequences of context {c} do not fit "
                                  f"(at most {fit}: --max-num-seqs {card.max_num_seqs}, {KV_FILL:.0%} of a KV cache of {kv_cap} "
                                  "tokens)")
            counts = concurrencies
        points.extend(DecodePoint(c, n) for n in counts)
    batch = int(settings.prefill_batch)
    budget = int(card.max_num_batched_tokens or 0)
    batch_isl = [n for n in isl if batch > 1 and batch <= max_seqs and (not budget or n * batch <= budget)]
    return SweepPlan(prefill_isl=isl, prefill_batch_isl=batch_isl, prefill_batch=batch, decode=points, decode_osl=osl, repeats=settings.profile_repeats,
                     warmup=settings.profile_warmup, max_kv_tokens=kv_cap, max_context_length=max_ctx)
