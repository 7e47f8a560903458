"""The profile on disk, in Dynamo's layout: DIR/selected_prefill_interpolation/raw_data.npz (prefill_isl,
prefill_ttft [ms], prefill_thpt_per_gpu [tokens/s]) and DIR/selected_decode_interpolation/raw_data.npz (x_kv_usage
[0-1], y_context_length, z_itl [ms], z_thpt_per_gpu [tokens/s], max_kv_tokens [1 element]); Dynamo's JSON fallback
(prefill_raw_data.json / decode_raw_data.json in DIR) is read too. "per gpu" here means per engine instance.

One key is ours: prefill_seq_overhead_ms (1 element, optional; Dynamo's readers ignore it), the extra time each
further prompt of a batch costs beyond its own tokens' share of TTFT. The mocker charges it; without it a batch of
prompts pays the fixed part of TTFT once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynamo_mono.config import ConfigError

PREFILL_NPZ = Path("selected_prefill_interpolation") / "raw_data.npz"
DECODE_NPZ = Path("selected_decode_interpolation") / "raw_data.npz"
PREFILL_JSON = "prefill_raw_data.json"
DECODE_JSON = "decode_raw_data.json"
PREFILL_KEYS = ("prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu")
SEQ_OVERHEAD_KEY = "prefill_seq_overhead_ms"
DECODE_KEYS = ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens")


@dataclass(frozen=True)
class PrefillProfile:
    """TTFT and prefill throughput of one instance running one prompt at a time, per prompt length."""

    isl: np.ndarray  # tokens
    ttft_ms: np.ndarray
    thpt_per_instance: np.ndarray  # prompt tokens per second
    seq_overhead_ms: float | None = None  # extra cost of each further prompt in a batch (None: not measured)

    def __post_init__(self) -> None:
        n = len(self.isl)
        if n == 0 or len(self.ttft_ms) != n or len(self.thpt_per_instance) != n:
            raise ConfigError("prefill profile: prefill_isl, prefill_ttft and prefill_thpt_per_gpu must be "
                              "non-empty and of equal length")


@dataclass(frozen=True)
class DecodeProfile:
    """ITL and decode throughput of one instance, per point (active KV usage, average context length)."""

    kv_usage: np.ndarray  # active KV tokens / max_kv_tokens, 0-1
    context_length: np.ndarray  # average tokens per sequence while decoding (ISL + OSL / 2)
    itl_ms: np.ndarray
    thpt_per_instance: np.ndarray  # output tokens per second
    max_kv_tokens: int

    def __post_init__(self) -> None:
        n = len(self.kv_usage)
        if n == 0 or any(len(a) != n for a in (self.context_length, self.itl_ms, self.thpt_per_instance)):
            raise ConfigError("decode profile: x_kv_usage, y_context_length, z_itl and z_thpt_per_gpu must be "
                              "non-empty and of equal length")
        if self.max_kv_tokens < 1:
            raise ConfigError(f"decode profile: max_kv_tokens must be >= 1, not {self.max_kv_tokens}")

    @property
    def active_kv_tokens(self) -> np.ndarray:
        return self.kv_usage * self.max_kv_tokens


@dataclass(frozen=True)
class Profile:
    prefill: PrefillProfile
    decode: DecodeProfile


def _f(a: object) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def write_profile(out_dir: str | Path, profile: Profile) -> tuple[Path, Path]:
    """Write both NPZ files under out_dir (created); return their paths."""
    out = Path(out_dir)
    p, d = out / PREFILL_NPZ, out / DECODE_NPZ
    p.parent.mkdir(parents=True, exist_ok=True)
    d.parent.mkdir(parents=True, exist_ok=True)
    pf, dc = profile.prefill, profile.decode
    extra = {} if pf.seq_overhead_ms is None else {SEQ_OVERHEAD_KEY: _f([pf.seq_overhead_ms])}
    np.savez(p, prefill_isl=_f(pf.isl), prefill_ttft=_f(pf.ttft_ms), prefill_thpt_per_gpu=_f(pf.thpt_per_instance),
             **extra)
    np.savez(d, x_kv_usage=_f(dc.kv_usage), y_context_length=_f(dc.context_length), z_itl=_f(dc.itl_ms),
             z_thpt_per_gpu=_f(dc.thpt_per_instance), max_kv_tokens=np.asarray([dc.max_kv_tokens], dtype=np.int64))
    return p, d


def is_profile_dir(path: str | Path) -> bool:
    """True when path is a directory holding a prefill and a decode profile (NPZ or Dynamo's JSON fallback)."""
    p = Path(path)
    return p.is_dir() and ((p / PREFILL_NPZ).is_file() or (p / PREFILL_JSON).is_file()) and (
        (p / DECODE_NPZ).is_file() or (p / DECODE_JSON).is_file())


def _load(directory: Path, npz: Path, js: str, keys: tuple[str, ...],
          optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    where = directory / npz
    try:
        if where.is_file():
            with np.load(where, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        elif (directory / js).is_file():
            where = directory / js
            data = json.loads(where.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ConfigError(f"profile {where}: expected a JSON object")
        else:
            raise ConfigError(f"profile {directory}: neither {npz} nor {js} exists (run `dynamo-mono profile "
                              f"--output-dir {directory}` first)")
    except OSError as exc:
        raise ConfigError(f"cannot read profile {where}: {exc.strerror or exc}") from None
    except ValueError as exc:  # bad zip / bad JSON
        raise ConfigError(f"profile {where}: unreadable ({exc})") from None
    missing = [k for k in keys if k not in data]
    if missing:
        raise ConfigError(f"profile {where}: missing {', '.join(missing)}")
    try:
        return {k: _f(data[k]) for k in (*keys, *(o for o in optional if o in data))}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"profile {where}: non-numeric data ({exc})") from None


def read_profile(profile_dir: str | Path) -> Profile:
    """Read a profile directory (ours or Dynamo's profiler's); ConfigError with a one-line message on failure."""
    d = Path(profile_dir)
    pre = _load(d, PREFILL_NPZ, PREFILL_JSON, PREFILL_KEYS, (SEQ_OVERHEAD_KEY,))
    dec = _load(d, DECODE_NPZ, DECODE_JSON, DECODE_KEYS)
    if len(dec["max_kv_tokens"]) < 1:
        raise ConfigError(f"profile {d}: max_kv_tokens is empty")
    overhead = pre.get(SEQ_OVERHEAD_KEY)
    return Profile(PrefillProfile(pre["prefill_isl"], pre["prefill_ttft"], pre["prefill_thpt_per_gpu"],
                                  float(overhead[0]) if overhead is not None and len(overhead) else None),
                   DecodeProfile(dec["x_kv_usage"], dec["y_context_length"], dec["z_itl"], dec["z_thpt_per_gpu"],
                                 int(dec["max_kv_tokens"][0])))


def ttft_intercept(isl: np.ndarray, ttft_ms: np.ndarray) -> float:
    """The fixed part of TTFT: the least-squares line through the (up to) three shortest prompts, at zero tokens,
    within [0, shortest TTFT]; 0 with fewer than two distinct lengths. Three points, not two: one noisy short
    prompt should not move it much."""
    order = np.argsort(isl)
    x, y = np.asarray(isl, float)[order][:3], np.asarray(ttft_ms, float)[order][:3]
    if len(np.unique(x)) < 2:
        return 0.0
    slope, at_zero = np.polyfit(x, y, 1)
    return float(min(y.min(), max(0.0, at_zero)))


def decode_grid(decode: DecodeProfile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scattered decode points as the grid the mocker interpolates: (active KV tokens [rows], context lengths
    [columns], ITL ms [rows x columns]). Points are grouped by context length (profilers sweep concurrency at a few
    context lengths); within a column ITL is linear in active KV tokens, extrapolated past its points along the
    line through its last two (a column of one point is flat)."""
    kv = decode.active_kv_tokens
    ctx_vals = np.unique(np.round(decode.context_length, 6))
    rows = np.unique(np.round(kv, 6))
    grid = np.empty((len(rows), len(ctx_vals)))
    for j, c in enumerate(ctx_vals):
        sel = np.isclose(decode.context_length, c)
        xs, ys = kv[sel], decode.itl_ms[sel]
        order = np.argsort(xs)
        xs, ys = xs[order], ys[order]
        for i, x in enumerate(rows):
            grid[i, j] = _interp_extrapolate(x, xs, ys)
    return rows, ctx_vals, grid


def _interp_extrapolate(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    if len(xs) == 1 or xs[-1] == xs[0]:
        return float(ys[0])
    if x < xs[0]:
        lo, hi = 0, 1
    elif x > xs[-1]:
        lo, hi = len(xs) - 2, len(xs) - 1
    else:
        return float(np.interp(x, xs, ys))
    slope = (ys[hi] - ys[lo]) / (xs[hi] - xs[lo]) if xs[hi] != xs[lo] else 0.0
    return max(0.0, float(ys[lo] + slope * (x - xs[lo])))
