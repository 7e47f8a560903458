"""Mocker options, plugin registration, cross-field validation and the timing profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dynamo_mono.config import ConfigError, defaults
from dynamo_mono.plugins import Plugins
from mocker import plugin
from mocker.engine import MockerEngine
from mocker.options import MOCKER_OPTIONS
from mocker.perf_model import PerfModel, load_profile

from .conftest import make_args


def test_options_have_dynamo_names_and_defaults() -> None:
    s = defaults(MOCKER_OPTIONS)
    assert (s.num_gpu_blocks_override, s.block_size, s.max_num_seqs, s.max_num_batched_tokens) == (16384, 64, 256, 8192)
    assert s.enable_prefix_caching and s.enable_chunked_prefill and s.watermark == 0.01 and s.speedup_ratio == 1.0
    names = {o.name for o in MOCKER_OPTIONS}
    assert not names & {"max_model_len", "reasoning_parser", "tool_call_parser"}
    assert all(o.group == "engine: mocker" for o in MOCKER_OPTIONS)


def test_plugin_registers_mocker_factory() -> None:
    p = Plugins()
    p.register_module(plugin, "mocker-test")
    reg = p.get("engine", "mocker")
    assert reg.options == MOCKER_OPTIONS
    engine = reg.factory(make_args(**defaults(MOCKER_OPTIONS).as_dict()))
    assert isinstance(engine, MockerEngine) and engine.model_card().block_size == 64


def test_cross_field_validation() -> None:
    with pytest.raises(ConfigError, match="chunked prefill is off"):
        MockerEngine(make_args(enable_chunked_prefill=False, max_num_batched_tokens=32, block_size=64))
    with pytest.raises(ConfigError, match="max model len"):
        MockerEngine(make_args(enable_chunked_prefill=False, max_num_batched_tokens=4096, max_model_len=8192))
    with pytest.raises(ConfigError, match="fault-instances"):
        MockerEngine(make_args(mocker_fault_instances="1,x"))
    MockerEngine(make_args(enable_chunked_prefill=False, max_num_batched_tokens=8192, max_model_len=8192))


def test_default_perf_model_magnitudes() -> None:
    m = PerfModel()
    assert 0.05 <= m.prefill_ms(1000, 0) / 1000 <= 0.1
    assert 8 <= m.decode_ms(1, 100) <= 15
    assert m.decode_ms(64, 128_000) > m.decode_ms(64, 1000)
    assert m.step_ms([(100, 0, 1.0)], 4, 400) > m.step_ms([], 4, 400)


def test_profile_npz_and_json_interpolate(tmp_path) -> None:
    data = dict(prefill_isl=np.array([100, 1000, 4000]), prefill_ttft_ms=np.array([10.0, 50.0, 200.0]),
                decode_active_kv_tokens=np.array([1000, 100000]), decode_context_length=np.array([100, 4000]),
                decode_itl=np.array([[5.0, 6.0], [20.0, 30.0]]))
    np.savez(tmp_path / "p.npz", **data)
    m = load_profile(str(tmp_path / "p.npz"))
    assert m.prefill_ms(550, 0) == pytest.approx(30.0)
    assert m.prefill_ms(500, 500) == pytest.approx(50.0 - (10 + 40 * 400 / 900))
    assert m.decode_ms(10, 1000) == pytest.approx(5.0)
    assert m.decode_ms(25, 100000) == pytest.approx(30.0)
    assert 5.0 < m.decode_ms(10, 50000) < 30.0
    (tmp_path / "p.json").write_text(json.dumps({k: v.tolist() for k, v in data.items()}))
    assert load_profile(str(tmp_path / "p.json")).prefill_ms(550, 0) == pytest.approx(30.0)
    engine = MockerEngine(make_args(planner_profile_data=str(tmp_path / "p.npz")))
    assert engine.perf.prefill_ms(550, 0) == pytest.approx(30.0)


def test_bad_profile_is_a_config_error(tmp_path) -> None:
    np.savez(tmp_path / "bad.npz", prefill_isl=np.array([1, 2]))
    with pytest.raises(ConfigError, match="missing array"):
        load_profile(str(tmp_path / "bad.npz"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_profile(str(tmp_path / "nope.npz"))


def test_profile_step_pays_the_fixed_prefill_cost_once(tmp_path) -> None:
    # TTFT = 2 ms + 0.05 ms per token: four fresh 100-token prompts in one step cost 2 + 4 x 5 ms, not 4 x 7 ms
    isl = [16, 1024, 4096]
    data = {"prefill_isl": isl, "prefill_ttft_ms": [2 + 0.05 * n for n in isl],
            "decode_active_kv_tokens": [0, 100000], "decode_context_length": [1, 8192],
            "decode_itl": [[5.0, 5.0], [9.0, 9.0]]}
    (tmp_path / "p.json").write_text(json.dumps(data))
    m = load_profile(str(tmp_path / "p.json"))
    assert m.step_ms([(100, 0, 1.0)], 0, 0) == pytest.approx(7.0)
    assert m.step_ms([(100, 0, 1.0)] * 4, 0, 0) == pytest.approx(22.0)
