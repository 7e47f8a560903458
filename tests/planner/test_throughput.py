"""Throughput-based scaling against hand-computed numbers, on a hand-made profile in Dynamo's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynamo_mono.config import ConfigError
from dynamo_mono.planner.config import PlannerConfig
from dynamo_mono.planner.interpolation import load_profile_dir
from dynamo_mono.planner.throughput import Observation, Prediction, ThroughputScaler, fit_budget
from tests.planner.profile_helper import write_profile


def _profile(d: Path) -> Path:
    """Prefill: 10 000 tok/s per GPU at any ISL, TTFT 10 ms at 100 tokens and 100 ms at 1000. Decode at context
    1000 (and 4000, twice as slow): ITL 10 ms at 10 % KV usage (1000 tok/s), 30 ms at 50 % (3000 tok/s)."""
    (d / "selected_prefill_interpolation").mkdir(parents=True)
    (d / "selected_decode_interpolation").mkdir(parents=True)
    np.savez(d / "selected_prefill_interpolation/raw_data.npz", prefill_isl=[100.0, 1000.0],
             prefill_ttft=[10.0, 100.0], prefill_thpt_per_gpu=[10000.0, 10000.0])
    np.savez(d / "selected_decode_interpolation/raw_data.npz", x_kv_usage=[0.1, 0.5, 0.1, 0.5],
             y_context_length=[1000.0, 1000.0, 4000.0, 4000.0], z_itl=[10.0, 30.0, 20.0, 60.0],
             z_thpt_per_gpu=[1000.0, 3000.0, 500.0, 1500.0], max_kv_tokens=[100000])
    return d


def _scaler(tmp_path: Path, **cfg) -> ThroughputScaler:
    config = PlannerConfig(profile_results_dir=str(tmp_path), itl_ms=20.0, min_instances=1, max_instances=8, **cfg)
    return ThroughputScaler(config, *load_profile_dir(str(_profile(tmp_path))))


def test_interpolation_reads_dynamo_keys(tmp_path: Path) -> None:
    prefill, decode = load_profile_dir(str(_profile(tmp_path)))
    assert prefill.ttft(550) == pytest.approx(55.0)
    assert decode.itl(concurrency=20, context=1000) == pytest.approx(15.0)  # usage 0.2: a quarter up 10 -> 30
    # usage 20 * 2500 / 100000 = 0.5: 30 ms on the context-1000 curve, 60 on the 4000 one, half-way between
    assert decode.itl(concurrency=20, context=2500) == pytest.approx(45.0)
    best = decode.best(20.0, 1000)  # ITL 20 is half-way along the 10 -> 30 ms segment
    assert (best.thpt_per_gpu, best.itl_ms, best.kv_usage) == pytest.approx((2000.0, 20.0, 0.3))
    assert decode.best(20.0, 4000).thpt_per_gpu == pytest.approx(500.0)  # only the first point meets 20 ms
    assert decode.best(20.0, 2500).thpt_per_gpu == pytest.approx((2000.0 + 500.0) / 2)


def test_disagg_and_agg_targets_by_hand(tmp_path: Path) -> None:
    pred = Prediction(num_req=1200, isl=950, osl=100)  # 20 req/s over 60 s; decode context 950 + 50 = 1000
    disagg = _scaler(tmp_path, mode="disagg").decide(pred, 60.0)
    # prefill: 20 * 950 = 19 000 tok/s / 10 000 = 1.9 -> 2; decode: 20 * 100 = 2000 tok/s / 2000 = 1.0 -> 1
    assert disagg.targets == {"prefill": 2, "decode": 1}
    agg = _scaler(tmp_path / "a", mode="agg").decide(pred, 60.0)
    assert agg.targets == {"agg": 3}  # ceil(1.9 + 1.0)
    assert "prefill needs 1.90" in agg.reason


def test_corrections_by_hand(tmp_path: Path) -> None:
    s = _scaler(tmp_path, mode="disagg")
    # 60 requests in 60 s lasting 20 s each on 1 decode instance: concurrency 20 at context 1000 -> expected ITL 15;
    # observed 30 -> ITL correction 2 -> target 20 / 2 = 10 ms -> 1000 tok/s per instance. Observed TTFT 47.5 ms
    # against 95 expected at ISL 950 -> prefill correction 0.5.
    s.update_corrections(Observation(duration_s=60, num_req=60, isl=950, osl=100, ttft_ms=47.5, itl_ms=30.0,
                                     request_duration_s=20.0), decode_instances=1)
    assert (s.ttft_correction, s.itl_correction) == pytest.approx((0.5, 2.0))
    d = s.decide(Prediction(1200, 950, 100), 60.0)
    assert d.targets == {"prefill": 1, "decode": 2}  # 1.9 * 0.5 -> 1; 2000 / 1000 -> 2
    # A slow TTFT never raises the prefill estimate (min(1, correction)), as in Dynamo.
    s.update_corrections(Observation(60, 60, 950, 100, ttft_ms=950.0, itl_ms=15.0, request_duration_s=20.0), 1)
    assert s.ttft_correction == pytest.approx(10.0)
    assert s.decide(Prediction(1200, 950, 100), 60.0).targets == {"prefill": 2, "decode": 1}


def test_no_correction_keeps_the_profile(tmp_path: Path) -> None:
    s = _scaler(tmp_path, mode="disagg", correction=False)
    s.update_corrections(Observation(60, 60, 950, 100, 47.5, 30.0, 20.0), 1)
    assert (s.ttft_correction, s.itl_correction) == (1.0, 1.0)


def test_targets_are_clamped_and_fit_the_gpu_budget(tmp_path: Path) -> None:
    s = _scaler(tmp_path, mode="disagg")
    assert s.decide(Prediction(0, 950, 100), 60.0).targets == {"prefill": 1, "decode": 1}  # min 1 each
    d = s.decide(Prediction(60000, 950, 100), 60.0)
    assert d.targets == {"prefill": 8, "decode": 8} and "clamped" in d.reason  # 95 and 50 wanted, max 8
    cfg = PlannerConfig(mode="disagg", max_gpu_budget=4, decode_gpus=1, profile_results_dir="x")
    assert fit_budget({"prefill": 5, "decode": 3}, cfg) == {"prefill": 3, "decode": 1}  # x0.5 -> 2, 1; +1 left
    cfg = PlannerConfig(mode="disagg", max_gpu_budget=10, decode_gpus=2, profile_results_dir="x")
    assert fit_budget({"prefill": 4, "decode": 4}, cfg) == {"prefill": 4, "decode": 3}  # 12 GPUs: x5/6 -> 3 + 3x2 = 9, the GPU left -> prefill


def test_mocker_perf_model_profile_round_trips(tmp_path: Path) -> None:
    write_profile(tmp_path)
    prefill, decode = load_profile_dir(str(tmp_path))
    assert prefill.ttft(1024) == pytest.approx(2.0 + 1024 * (0.06 + 1.5e-6 * 512))
    assert decode.itl(concurrency=64, context=1024) == pytest.approx(8.0 + 64 * 0.02 + 64 * 1024 * 4e-5)


def test_missing_or_broken_profiles_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither .*raw_data.npz"):
        load_profile_dir(str(tmp_path))
    _profile(tmp_path)
    np.savez(tmp_path / "selected_decode_interpolation/raw_data.npz", x_kv_usage=[0.1])
    with pytest.raises(ConfigError, match="lacks y_context_length"):
        load_profile_dir(str(tmp_path))


def test_tokens_within_a_ttft_target(tmp_path: Path) -> None:
    prefill, _ = load_profile_dir(str(_profile(tmp_path)))  # 10 ms at 100 tokens, 100 ms at 1000
    assert prefill.tokens_within(55.0) == pytest.approx(550.0)
    assert prefill.tokens_within(500.0) == pytest.approx(5000.0)  # the last segment extrapolated
    assert prefill.tokens_within(5.0) == pytest.approx(50.0)
