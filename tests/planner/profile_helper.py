"""Profiles for planner tests and benchmarks, computed from the mocker's perf model, in Dynamo's layout (and the
mocker's own --planner-profile-data format, so the mocker runs at the profiled speed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mocker.perf_model import PerfModel


def write_profile(directory: str | Path, perf: PerfModel | None = None, *, max_kv_tokens: int = 16384 * 64,
                  isls: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192),
                  contexts: tuple[int, ...] = (256, 1024, 4096, 16384),
                  concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
                  chunk: int | None = None) -> Path:
    """DIR/selected_prefill_interpolation/raw_data.npz and DIR/selected_decode_interpolation/raw_data.npz with
    Dynamo's keys, plus DIR/mocker_profile.npz (the mocker's keys); returns DIR. `chunk`: the engine prefills in
    steps of at most this many tokens (--max-num-batched-tokens), each paying the step's fixed cost."""
    perf = perf or PerfModel()
    d = Path(directory)
    (d / "selected_prefill_interpolation").mkdir(parents=True, exist_ok=True)
    (d / "selected_decode_interpolation").mkdir(parents=True, exist_ok=True)
    isl = np.array(isls, dtype=float)
    step = chunk or max(isls)
    ttft = np.array([sum(perf.step_ms([(min(step, n - c), c, 1.0)], 0, 0) for c in range(0, n, step))
                     for n in isls])
    np.savez(d / "selected_prefill_interpolation/raw_data.npz", prefill_isl=isl, prefill_ttft=ttft,
             prefill_thpt_per_gpu=isl / ttft * 1000.0)
    xs, ys, itls, thpts = [], [], [], []
    for ctx in contexts:
        for c in concurrencies:
            kv = c * ctx
            if kv > max_kv_tokens:
                continue
            itl = perf.decode_ms(c, kv)
            xs.append(kv / max_kv_tokens)
            ys.append(ctx)
            itls.append(itl)
            thpts.append(c / itl * 1000.0)
    np.savez(d / "selected_decode_interpolation/raw_data.npz", x_kv_usage=np.array(xs), y_context_length=np.array(ys,
             dtype=float), z_itl=np.array(itls), z_thpt_per_gpu=np.array(thpts),
             max_kv_tokens=np.array([max_kv_tokens]))
    # The mocker's format: decode ITL on a grid of active KV tokens x context length.
    kv_grid = np.array([1024, 8192, 65536, 262144, max_kv_tokens], dtype=float)
    ctx_grid = np.array(contexts, dtype=float)
    grid = np.array([[perf.decode_ms(max(1, int(kv // c)), int(kv)) for c in ctx_grid] for kv in kv_grid])
    np.savez(d / "mocker_profile.npz", prefill_isl=isl, prefill_ttft_ms=ttft, decode_active_kv_tokens=kv_grid,
             decode_context_length=ctx_grid, decode_itl=grid)
    return d
