"""`dynamo-mono profile --engine vllm`: a tiny sweep of the real engine writes a profile the mocker replays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.vllm.conftest import BLOCK_SIZE, ENGINE_FLAGS, NUM_BLOCKS, VLLM_ENV

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]


def test_vllm_profile_tiny_sweep(tiny_model: Path, tmp_path: Path) -> None:
    from dynamo_mono.profiler.data import read_profile
    from mocker.perf_model import load_profile

    out = tmp_path / "prof"
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "profile", *ENGINE_FLAGS, "--model", str(tiny_model),
                        "--output-dir", str(out), "--prefill-isl", "64,512", "--prefill-batch", "2",
                        "--decode-context-length", "256", "--decode-concurrency", "1,4", "--decode-osl", "8",
                        "--profile-repeats", "1", "--profile-warmup", "1", "--no-plot", "--no-progress",
                        "--log-level", "warning"],
                       capture_output=True, text=True, timeout=280, env={**os.environ, **VLLM_ENV})
    assert r.returncode == 0, r.stderr[-3000:]
    prof = read_profile(out)
    assert prof.prefill.isl.tolist() == [64, 512] and np.all(prof.prefill.ttft_ms > 0)
    assert prof.prefill.seq_overhead_ms is not None and prof.prefill.seq_overhead_ms >= 0
    assert prof.decode.max_kv_tokens == NUM_BLOCKS * BLOCK_SIZE  # what vLLM's card reports
    assert sorted(prof.decode.context_length.tolist()) == [256, 256]
    np.testing.assert_allclose(sorted(prof.decode.active_kv_tokens), [256, 1024])
    assert np.all(prof.decode.itl_ms > 0) and np.all(prof.decode.thpt_per_instance > 0)
    model = load_profile(str(out))  # the mocker replays it
    assert model.prefill_ms(512, 0) == pytest.approx(prof.prefill.ttft_ms[1])
