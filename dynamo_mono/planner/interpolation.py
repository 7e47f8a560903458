"""Engine profiles in Dynamo's layout: prefill TTFT / throughput over ISL, decode ITL / throughput over KV usage and
context length, interpolated linearly (numpy only).

DIR/selected_prefill_interpolation/raw_data.npz: prefill_isl, prefill_ttft (ms), prefill_thpt_per_gpu (tokens/s).
DIR/selected_decode_interpolation/raw_data.npz: x_kv_usage (active KV tokens / max_kv_tokens, 0..1),
y_context_length, z_itl (ms), z_thpt_per_gpu (output tokens/s), max_kv_tokens ([n]); the points are scattered
(one sweep of concurrency per context length). JSON fallbacks DIR/prefill_raw_data.json / decode_raw_data.json
hold the same keys, as in Dynamo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dynamo_mono.config import ConfigError

PREFILL_NPZ = "selected_prefill_interpolation/raw_data.npz"
DECODE_NPZ = "selected_decode_interpolation/raw_data.npz"
PREFILL_KEYS = ("prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu")
DECODE_KEYS = ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")


def _read(directory: str, npz: str, json_name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    base = Path(directory)
    path = base / npz
    try:
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                raw: Mapping[str, Any] = {k: data[k] for k in data.files}
        elif (base / json_name).exists():
            path = base / json_name
            raw = json.loads(path.read_text(encoding="utf-8"))
        else:
            raise ConfigError(f"--profile-results-dir {directory}: neither {npz} nor {json_name} exists "
                              "(make one with `dynamo-mono profile --output-dir DIR`)")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--profile-results-dir: cannot read {path}: {exc}") from None
    missing = [k for k in keys if k not in raw]
    if missing:
        raise ConfigError(f"--profile-results-dir: {path} lacks {', '.join(missing)}")
    try:
        return {k: np.asarray(raw[k], dtype=float).ravel() for k in keys}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--profile-results-dir: {path}: non-numeric data ({exc})") from None


class PrefillProfile:
    """TTFT (ms) and prefill throughput per GPU (tokens/s) at an ISL, linear between points, clamped at the ends."""

    def __init__(self, isl: np.ndarray, ttft_ms: np.ndarray, thpt_per_gpu: np.ndarray, source: str = "profile"):
        if len(isl) == 0 or not len(isl) == len(ttft_ms) == len(thpt_per_gpu):
            raise ConfigError(f"{source}: prefill_isl, prefill_ttft and prefill_thpt_per_gpu must be non-empty and "
                              "equally long")
        if np.any(thpt_per_gpu <= 0) or np.any(ttft_ms <= 0):
            raise ConfigError(f"{source}: prefill TTFT and throughput must be positive")
        order = np.argsort(isl)
        self.isl, self.ttft_ms, self.thpt = isl[order], ttft_ms[order], thpt_per_gpu[order]

    def ttft(self, isl: float) -> float:
        return float(np.interp(isl, self.isl, self.ttft_ms))

    def thpt_per_gpu(self, isl: float) -> float:
        return float(np.interp(isl, self.isl, self.thpt))

    def tokens_within(self, ttft_ms: float) -> float:
        """Most prompt tokens one instance prefills within ttft_ms (the last segment extrapolated past the profile):
        a request behind that many queued tokens (its own included) still meets a TTFT target of ttft_ms."""
        isl, t = self.isl, self.ttft_ms
        if ttft_ms <= t[0]:
            return float(isl[0] * ttft_ms / t[0])
        if ttft_ms >= t[-1]:
            if len(isl) == 1 or t[-1] <= t[-2]:
                return float(isl[-1] * ttft_ms / t[-1])
            return float(isl[-1] + (ttft_ms - t[-1]) * (isl[-1] - isl[-2]) / (t[-1] - t[-2]))
        return float(np.interp(ttft_ms, np.maximum.accumulate(t), isl))


@dataclass(frozen=True)
class DecodePoint:
    """The best decode operating point at one context length under an ITL target."""

    thpt_per_gpu: float  # output tokens/s per GPU
    itl_ms: float
    kv_usage: float


class DecodeProfile:
    """Decode ITL and throughput over (KV usage, context length): per profiled context length a curve over KV usage;
    a query between two profiled context lengths interpolates linearly between their answers."""

    def __init__(self, kv_usage: np.ndarray, context: np.ndarray, itl_ms: np.ndarray, thpt: np.ndarray,
                 max_kv_tokens: float, source: str = "profile") -> None:
        n = len(kv_usage)
        if n == 0 or not n == len(context) == len(itl_ms) == len(thpt):
            raise ConfigError(f"{source}: x_kv_usage, y_context_length, z_itl and z_thpt_per_gpu must be non-empty "
                              "and equally long")
        if max_kv_tokens <= 0:
            raise ConfigError(f"{source}: max_kv_tokens must be positive")
        self.max_kv_tokens = float(max_kv_tokens)
        self.contexts = np.unique(context)
        self.curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for c in self.contexts:
            sel = context == c
            order = np.argsort(kv_usage[sel])
            self.curves.append((kv_usage[sel][order], itl_ms[sel][order], thpt[sel][order]))

    def _bracket(self, context: float) -> list[tuple[int, float]]:
        """(curve index, weight) of the profiled context lengths around `context` (clamped at the ends)."""
        cs = self.contexts
        if context <= cs[0] or len(cs) == 1:
            return [(0, 1.0)]
        if context >= cs[-1]:
            return [(len(cs) - 1, 1.0)]
        j = int(np.searchsorted(cs, context))
        w = (context - cs[j - 1]) / (cs[j] - cs[j - 1])
        return [(j - 1, 1.0 - w), (j, w)]

    def itl(self, concurrency: float, context: float) -> float:
        """Expected ITL (ms) of `concurrency` sequences of `context` tokens on one instance."""
        usage = concurrency * context / self.max_kv_tokens
        return sum(w * float(np.interp(usage, *self.curves[i][:2])) for i, w in self._bracket(context))

    def best(self, itl_target_ms: float, context: float) -> DecodePoint:
        """The highest throughput whose ITL meets the target at this context length (the lowest-load point when
        none does, as Dynamo)."""
        thpt = itl = usage = 0.0
        for i, w in self._bracket(context):
            p = _best_on_curve(*self.curves[i], itl_target_ms)
            thpt += w * p.thpt_per_gpu
            itl += w * p.itl_ms
            usage += w * p.kv_usage
        return DecodePoint(thpt, itl, usage)


def _best_on_curve(usage: np.ndarray, itl: np.ndarray, thpt: np.ndarray, target: float) -> DecodePoint:
    """Largest throughput along one curve with ITL <= target, interpolating inside the segment that crosses it."""
    best = DecodePoint(float(thpt[0]), float(itl[0]), float(usage[0]))
    found = False
    for k in range(len(usage)):
        if itl[k] <= target and (not found or thpt[k] > best.thpt_per_gpu):
            best, found = DecodePoint(float(thpt[k]), float(itl[k]), float(usage[k])), True
        if k + 1 < len(usage) and itl[k] <= target < itl[k + 1]:  # the target lies inside this segment
            f = (target - itl[k]) / (itl[k + 1] - itl[k])
            t = float(thpt[k] + f * (thpt[k + 1] - thpt[k]))
            if t > best.thpt_per_gpu:
                best = DecodePoint(t, target, float(usage[k] + f * (usage[k + 1] - usage[k])))
    return best


def load_profile_dir(directory: str) -> tuple[PrefillProfile, DecodeProfile]:
    """Both profiles of a Dynamo-layout profile directory; ConfigError naming the file on any problem."""
    p = _read(directory, PREFILL_NPZ, "prefill_raw_data.json", PREFILL_KEYS)
    d = _read(directory, DECODE_NPZ, "decode_raw_data.json", DECODE_KEYS)
    prefill = PrefillProfile(p["prefill_isl"], p["prefill_ttft"], p["prefill_thpt_per_gpu"],
                             f"{directory}/{PREFILL_NPZ}")
    decode = DecodeProfile(d["x_kv_usage"], d["y_context_length"], d["z_itl"], d["z_thpt_per_gpu"],
                           float(d["max_kv_tokens"][0]) if len(d["max_kv_tokens"]) else 0.0,
                           f"{directory}/{DECODE_NPZ}")
    return prefill, decode
