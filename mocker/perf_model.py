"""Simulated step time: prefill cost of new tokens over their context plus decode cost of the batch.

Default coefficients approximate a 7-8B dense model (bf16) on one H100:
- prefill: ~0.06 ms per new token (compute bound, ~16 GFLOP/token), plus an attention term of
  1.5e-6 ms per (new token x context token) pair, plus a 2 ms fixed cost per step that has prefill;
- decode: 8 ms per step (reading ~16 GB of weights), plus 0.02 ms per sequence in the batch, plus
  4e-5 ms per active KV token (~128 KiB of KV per token read at ~3 TB/s).
So a 1000-token prompt takes ~63 ms to prefill and a decode step of 64 sequences x 2000 tokens ~14 ms.

A measured profile (Dynamo's --planner-profile-data: the mocker NPZ, JSON with the same keys, or a profile
directory as `dynamo-mono profile` and Dynamo's profiler write it, see dynamo_mono/profiler/data.py) replaces the
formulas: prefill time of a chunk = TTFT(context + new) - TTFT(context), interpolated (linearly
extrapolated) over prefill_isl / prefill_ttft_ms; decode step time = ITL interpolated over
decode_active_kv_tokens and decode_context_length (decode_itl as a 2-D grid
[len(active_kv_tokens), len(context_length)], or 1-D alongside decode_active_kv_tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynamo_mono.config import ConfigError
from dynamo_mono.profiler.data import SEQ_OVERHEAD_KEY, ttft_intercept


@dataclass
class PerfModel:
    """Formula-based step time in milliseconds (see module docstring for the default coefficients)."""

    prefill_base_ms: float = 2.0
    prefill_ms_per_token: float = 0.06
    prefill_ms_per_token_pair: float = 1.5e-6
    decode_base_ms: float = 8.0
    decode_ms_per_seq: float = 0.02
    decode_ms_per_kv_token: float = 4e-5

    def prefill_ms(self, new_tokens: int, context: int) -> float:
        """Time of one prefill chunk of new_tokens after `context` already-computed (or cached) tokens."""
        return new_tokens * (self.prefill_ms_per_token + self.prefill_ms_per_token_pair * (context + new_tokens / 2))

    def decode_ms(self, batch: int, active_kv_tokens: int) -> float:
        return self.decode_base_ms + batch * self.decode_ms_per_seq + active_kv_tokens * self.decode_ms_per_kv_token

    def step_ms(self, prefill: list[tuple[int, int, float]], decode_batch: int, decode_kv_tokens: int) -> float:
        """Whole step: prefill chunks (new, context, slowdown factor) plus the decode batch."""
        t = 0.0
        if prefill:
            t = self.prefill_base_ms
            for new, ctx, factor in prefill:
                t += self.prefill_ms(new, ctx) * factor
        if decode_batch:
            t += self.decode_ms(decode_batch, decode_kv_tokens)
        return t


def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Linear interpolation, linearly extrapolated past the last point, clamped at >= 0."""
    if len(xs) == 1:
        return float(ys[0])
    if x > xs[-1]:
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if xs[-1] != xs[-2] else 0.0
        return max(0.0, float(ys[-1] + slope * (x - xs[-1])))
    return max(0.0, float(np.interp(x, xs, ys)))


class ProfilePerfModel(PerfModel):
    """Step time from a profile measured on a real engine."""

    def __init__(self, data: dict[str, Any], source: str = "profile") -> None:
        super().__init__()
        try:
            isl = np.asarray(data["prefill_isl"], dtype=float).ravel()
            ttft = np.asarray(data["prefill_ttft_ms"], dtype=float).ravel()
            kv = np.asarray(data["decode_active_kv_tokens"], dtype=float).ravel()
            ctx = np.asarray(data["decode_context_length"], dtype=float).ravel()
            itl = np.asarray(data["decode_itl"], dtype=float)
        except KeyError as exc:
            raise ConfigError(f"planner profile {source}: missing array {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"planner profile {source}: non-numeric data ({exc})") from None
        if len(isl) == 0 or len(isl) != len(ttft):
            raise ConfigError(f"planner profile {source}: prefill_isl and prefill_ttft_ms must be non-empty and equal length")
        order = np.argsort(isl)
        self.isl, self.ttft = isl[order], ttft[order]
        # the fixed part of a prefill: TTFT linearly extrapolated to zero tokens from the first two points
        self.intercept = ttft_intercept(self.isl, self.ttft)
        # what each further prompt of a step costs beyond its tokens (measured by `dynamo-mono profile`)
        overhead = np.asarray(data.get(SEQ_OVERHEAD_KEY, [0.0]), dtype=float).ravel()
        self.seq_overhead = max(0.0, float(overhead[0])) if len(overhead) else 0.0
        self.has_seq_overhead = SEQ_OVERHEAD_KEY in data
        if itl.ndim == 2:
            if itl.shape != (len(kv), len(ctx)):
                raise ConfigError(f"planner profile {source}: decode_itl shape {itl.shape} does not match "
                                  f"(len(decode_active_kv_tokens), len(decode_context_length)) = {(len(kv), len(ctx))}")
            ko, co = np.argsort(kv), np.argsort(ctx)
            self.kv, self.ctx, self.itl2 = kv[ko], ctx[co], itl[ko][:, co]
            self.itl1 = None
        elif itl.ndim == 1 and len(itl) == len(kv) and len(kv) > 0:
            ko = np.argsort(kv)
            self.kv, self.ctx, self.itl1, self.itl2 = kv[ko], ctx, itl[ko], None
        else:
            raise ConfigError(f"planner profile {source}: decode_itl must be 2-D (kv x context) or 1-D like decode_active_kv_tokens")

    def _ttft(self, tokens: float) -> float:
        return _interp(tokens, self.isl, self.ttft)

    def prefill_ms(self, new_tokens: int, context: int) -> float:
        if context <= 0:
            return self._ttft(new_tokens)
        return max(0.0, self._ttft(context + new_tokens) - self._ttft(context))

    def decode_ms(self, batch: int, active_kv_tokens: int) -> float:
        if self.itl1 is not None:
            return _interp(active_kv_tokens, self.kv, self.itl1)
        ctx_len = active_kv_tokens / batch if batch else 0.0
        kv = min(max(active_kv_tokens, self.kv[0]), self.kv[-1])
        # Bilinear: interpolate along context for the two bracketing kv rows, then along kv.
        j = int(np.searchsorted(self.kv, kv))
        j0, j1 = max(j - 1, 0), min(j, len(self.kv) - 1)
        r0 = float(np.interp(ctx_len, self.ctx, self.itl2[j0]))
        r1 = float(np.interp(ctx_len, self.ctx, self.itl2[j1]))
        if j0 == j1 or self.kv[j1] == self.kv[j0]:
            return r0
        w = (kv - self.kv[j0]) / (self.kv[j1] - self.kv[j0])
        return r0 + (r1 - r0) * w

    def step_ms(self, prefill: list[tuple[int, int, float]], decode_batch: int, decode_kv_tokens: int) -> float:
        # Each measured TTFT includes the fixed cost of one forward pass; a step pays it once, so every prefill
        # chunk after the first gives back the profile's intercept (its TTFT extrapolated to zero tokens) and pays
        # the profile's measured per-prompt overhead instead (0 when the profile has none). With a measured
        # overhead, a step that also decodes has paid its fixed part in the decode ITL: every fresh prompt joins it
        # at the per-prompt overhead.
        t = 0.0
        paid = bool(decode_batch) and self.has_seq_overhead
        for new, ctx, factor in prefill:
            t += self.prefill_ms(new, ctx) * factor
            if ctx <= 0:  # a fresh prompt's TTFT: the fixed part is in it
                if paid:
                    t += self.seq_overhead - self.intercept
                paid = True
        if decode_batch:
            t += self.decode_ms(decode_batch, decode_kv_tokens)
        return t


def load_profile(path: str) -> ProfilePerfModel:
    """Load a profile directory (selected_{prefill,decode}_interpolation/raw_data.npz), or an NPZ (or JSON) with the
    mocker's keys; ConfigError with a one-line message on failure."""
    p = Path(path)
    if p.is_dir():
        return ProfilePerfModel(_from_profile_dir(p), path)
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ConfigError(f"planner profile {path}: expected a JSON object")
        else:
            with np.load(p, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
    except OSError as exc:
        raise ConfigError(f"cannot read planner profile {path}: {exc.strerror or exc}") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"planner profile {path}: unreadable ({exc})") from None
    return ProfilePerfModel(data, path)


def _from_profile_dir(path: Path) -> dict[str, Any]:
    """A profile directory as the mocker's arrays: prefill TTFT per ISL; decode ITL on (active KV, context) grid."""
    from dynamo_mono.profiler.data import decode_grid, read_profile

    prof = read_profile(path)
    kv, ctx, itl = decode_grid(prof.decode)
    extra = {} if prof.prefill.seq_overhead_ms is None else {SEQ_OVERHEAD_KEY: [prof.prefill.seq_overhead_ms]}
    return {**extra, "prefill_isl": prof.prefill.isl, "prefill_ttft_ms": prof.prefill.ttft_ms,
            "decode_active_kv_tokens": kv, "decode_context_length": ctx, "decode_itl": itl}
