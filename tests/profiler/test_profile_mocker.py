"""`dynamo-mono profile` on the mocker end to end, the profile format (Dynamo's layout and keys), and the mocker
replaying a profile directory."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import EngineArgs
from dynamo_mono.profiler.data import (DECODE_KEYS, DECODE_NPZ, PREFILL_KEYS, PREFILL_NPZ, SEQ_OVERHEAD_KEY,
                                       DecodeProfile, PrefillProfile, Profile, decode_grid, read_profile,
                                       write_profile)
from dynamo_mono.profiler.measure import run_request
from mocker.engine import MockerEngine
from mocker.perf_model import load_profile

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None


def _profile(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "profile", "--output-dir", str(out),
                           "--no-progress", "--log-level", "warning", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def mocker_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prof") / "mocker"
    r = _profile(out, "--engine", "mocker", "--prefill-isl", "64,1024,4096", "--decode-context-length", "128,512",
                 "--decode-concurrency", "1,16", "--decode-osl", "6", "--profile-repeats", "1",
                 "--profile-warmup", "1", "--num-gpu-blocks-override", "1024", "--block-size", "16",
                 *([] if HAVE_MPL else ["--no-plot"]))
    assert r.returncode == 0, r.stderr
    return out


def test_profile_writes_dynamo_layout(mocker_profile: Path) -> None:
    with np.load(mocker_profile / PREFILL_NPZ) as p:
        assert set(p.files) == {*PREFILL_KEYS, SEQ_OVERHEAD_KEY}  # Dynamo's keys + ours (batched prompts)
        assert p[SEQ_OVERHEAD_KEY].shape == (1,) and p[SEQ_OVERHEAD_KEY][0] >= 0
        assert p["prefill_isl"].tolist() == [64, 1024, 4096]
        assert p["prefill_ttft"].shape == p["prefill_thpt_per_gpu"].shape == (3,)
        np.testing.assert_allclose(p["prefill_thpt_per_gpu"], p["prefill_isl"] / (p["prefill_ttft"] / 1000))
    with np.load(mocker_profile / DECODE_NPZ) as d:
        assert set(d.files) == set(DECODE_KEYS)
        assert d["max_kv_tokens"].tolist() == [1024 * 16]  # one element, as Dynamo's planner reads [0]
        for k in ("x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu"):
            assert d[k].shape == (4,), k  # 2 context lengths x 2 concurrencies, scattered points
        assert sorted(set(d["y_context_length"].tolist())) == [128, 512]
        assert np.all((d["x_kv_usage"] > 0) & (d["x_kv_usage"] <= 1))
        np.testing.assert_allclose(d["x_kv_usage"] * 16384 / d["y_context_length"], [1, 16, 1, 16])
    facts = json.loads((mocker_profile / "profile.json").read_text())
    assert facts["engine"] == "mocker" and facts["block_size"] == 16 and facts["total_kv_blocks"] == 1024
    if HAVE_MPL:
        assert (mocker_profile / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_is_monotonic(mocker_profile: Path) -> None:
    """Contrasts of 10x or more in the mocker's model, so the order cannot depend on machine speed."""
    prof = read_profile(mocker_profile)
    ttft = prof.prefill.ttft_ms
    assert ttft[0] < ttft[1] < ttft[2]  # 64, 1024, 4096 tokens: ~6, ~65, ~270 simulated ms
    for ctx in (128, 512):
        sel = prof.decode.context_length == ctx
        conc = prof.decode.kv_usage[sel] * prof.decode.max_kv_tokens / ctx
        thpt = prof.decode.thpt_per_instance[sel]
        assert thpt[np.argmax(conc)] > thpt[np.argmin(conc)]  # 16 sequences per step vs 1


def test_mocker_replays_the_profile_it_wrote(mocker_profile: Path) -> None:
    model = load_profile(str(mocker_profile))
    prof = read_profile(mocker_profile)
    for isl, ttft in zip(prof.prefill.isl, prof.prefill.ttft_ms):
        assert model.prefill_ms(int(isl), 0) == pytest.approx(ttft)


def _synthetic(tmp: Path, seq_overhead: float | None = None) -> Path:
    """TTFT = 10 + 0.2 ms per token; ITL = 20 + 0.01 ms per active KV token, at two context lengths."""
    isl = np.array([100.0, 500.0, 1000.0])
    kv = np.array([1000.0, 4000.0, 1000.0, 4000.0])
    ctx = np.array([100.0, 100.0, 1000.0, 1000.0])
    itl = 20 + 0.01 * kv
    write_profile(tmp, Profile(PrefillProfile(isl, 10 + 0.2 * isl, isl / (10 + 0.2 * isl) * 1000, seq_overhead),
                               DecodeProfile(kv / 10000, ctx, itl, 1000 * kv / ctx / itl, 10000)))
    return tmp


def test_profile_dir_model_values(tmp_path: Path) -> None:
    model = load_profile(str(_synthetic(tmp_path)))
    assert model.prefill_ms(300, 0) == pytest.approx(70.0)
    assert model.prefill_ms(200, 300) == pytest.approx(40.0)  # TTFT(500) - TTFT(300): the chunk's share
    assert model.decode_ms(10, 1000) == pytest.approx(30.0)  # 10 sequences of context 100
    assert model.decode_ms(10, 2500) == pytest.approx(45.0)  # halfway in KV


def test_batched_prompts_pay_the_measured_overhead(tmp_path: Path) -> None:
    plain = load_profile(str(_synthetic(tmp_path / "a")))
    assert plain.intercept == pytest.approx(10.0)
    # two fresh prompts in one step: the fixed 10 ms once, then each prompt's tokens
    assert plain.step_ms([(100, 0, 1.0), (200, 0, 1.0)], 0, 0) == pytest.approx(10 + 20 + 40)
    assert read_profile(tmp_path / "a").prefill.seq_overhead_ms is None
    measured = load_profile(str(_synthetic(tmp_path / "b", seq_overhead=3.0)))
    assert read_profile(tmp_path / "b").prefill.seq_overhead_ms == 3.0
    assert measured.step_ms([(100, 0, 1.0), (200, 0, 1.0)], 0, 0) == pytest.approx(10 + 20 + 40 + 3)
    # with a decode batch in the step, its ITL holds the step's fixed part: each fresh prompt pays the overhead
    decode = measured.decode_ms(10, 1000)
    assert measured.step_ms([(100, 0, 1.0)], 10, 1000) == pytest.approx(decode + 20 + 3)
    assert plain.step_ms([(100, 0, 1.0)], 10, 1000) == pytest.approx(plain.decode_ms(10, 1000) + 30)


def test_decode_grid_groups_by_context() -> None:
    dec = DecodeProfile(np.array([0.1, 0.4, 0.2]), np.array([100.0, 100.0, 1000.0]), np.array([2.0, 5.0, 3.0]),
                        np.array([1.0, 1.0, 1.0]), 1000)
    kv, ctx, grid = decode_grid(dec)
    assert kv.tolist() == [100, 200, 400] and ctx.tolist() == [100, 1000]
    np.testing.assert_allclose(grid[:, 0], [2.0, 3.0, 5.0])  # interpolated in KV at context 100
    np.testing.assert_allclose(grid[:, 1], [3.0, 3.0, 3.0])  # one point: flat


def test_reads_dynamo_json_fallback(tmp_path: Path) -> None:
    (tmp_path / "prefill_raw_data.json").write_text(json.dumps(
        {"prefill_isl": [100, 1000], "prefill_ttft": [20, 200], "prefill_thpt_per_gpu": [5000, 5000]}))
    (tmp_path / "decode_raw_data.json").write_text(json.dumps(
        {"x_kv_usage": [0.1, 0.5], "y_context_length": [500, 500], "z_itl": [10, 30],
         "z_thpt_per_gpu": [20, 40], "max_kv_tokens": 10000}))
    prof = read_profile(tmp_path)
    assert prof.decode.max_kv_tokens == 10000 and prof.prefill.ttft_ms.tolist() == [20, 200]
    assert load_profile(str(tmp_path)).decode_ms(2, 1000) == pytest.approx(10.0)


def test_bad_profile_dirs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither"):
        read_profile(tmp_path)
    (tmp_path / PREFILL_NPZ).parent.mkdir()
    np.savez(tmp_path / PREFILL_NPZ, prefill_isl=[1.0], prefill_ttft=[1.0])
    (tmp_path / DECODE_NPZ).parent.mkdir()
    np.savez(tmp_path / DECODE_NPZ, x_kv_usage=[0.1], y_context_length=[1.0], z_itl=[1.0], z_thpt_per_gpu=[1.0],
             max_kv_tokens=[10])
    with pytest.raises(ConfigError, match="missing prefill_thpt_per_gpu"):
        load_profile(str(tmp_path))


async def test_mocker_timing_follows_profile(tmp_path: Path) -> None:
    """The mocker never runs faster than its simulated time, so measured TTFT / ITL are bounded below by the
    profile's (the default model would give ~60 ms and ~8 ms here)."""
    prof = _synthetic(tmp_path)
    args = EngineArgs(model_path="fake", served_model_name="m", instance_id=0, max_model_len=4096,
                      eos_token_ids=[1], vocab_size=1000,
                      options={"planner_profile_data": str(prof), "speedup_ratio": 1.0})
    engine = MockerEngine(args)
    await engine.start()
    try:
        tl = await run_request(engine, list(range(2, 1002)), 4)
    finally:
        await engine.stop()
    assert tl.ttft_s * 1000 >= 210 * 0.98  # TTFT(1000 tokens) = 10 + 200 ms
    gaps = np.diff([t for t, _ in tl.outputs]) * 1000
    assert gaps.min() >= 20 * 0.98  # ITL of one sequence of ~1000 tokens >= 20 ms (the profile's floor)


def test_profile_cli_errors(tmp_path: Path) -> None:
    r = _profile(tmp_path / "x", "--decode-concurrency", "100000", "--decode-context-length", "128",
                 "--num-gpu-blocks-override", "64", "--no-plot")
    assert r.returncode == 2 and "--decode-concurrency" in r.stderr and "do not fit" in r.stderr
    r = _profile(tmp_path / "x", "--prefill-isl", "12,abc", "--no-plot")
    assert r.returncode == 2 and "comma-separated integers" in r.stderr
    r = _profile(tmp_path / "x", "--num-instances", "2")
    assert r.returncode == 2 and "unrecognized arguments: --num-instances" in r.stderr
    assert not (tmp_path / "x").exists()
