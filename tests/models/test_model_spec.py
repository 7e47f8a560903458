"""The --config models file and engine-scoped options: one-line errors naming the model and the option."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dynamo_mono.cli import main, serve_options
from dynamo_mono.config import ConfigError, resolve
from dynamo_mono.model_spec import specs_from_file
from dynamo_mono.hookspecs import hookimpl
from dynamo_mono.plugins import Plugins, get_plugins
from dynamo_mono.server import build_state, model_specs, stop_engines


def _engines() -> dict:
    return {name: reg.options for name, reg in get_plugins().registered("engine").items()}


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return str(path)


def test_entries_resolve_each_engines_own_options(tmp_path: Path) -> None:
    specs = specs_from_file(_file(tmp_path, """
- name: a
  options: {block_size: 32, speedup-ratio: 2}
- name: b
  instances: 3
  kind: chat
  reasoning_parser: deepseek_r1
"""), _engines(), env={})
    a, b = specs
    assert (a.name, a.engine, a.instances, a.engine_options["block_size"], a.engine_options["speedup_ratio"]) == \
        ("a", "mocker", 1, 32, 2.0)
    assert b.engine_options["block_size"] == 64 and b.instances == 3 and b.reasoning_parser == "deepseek_r1"


@pytest.mark.parametrize("text, fragment", [
    ("- name: a\n  options: {blok_size: 32}\n", "model 'a': engine 'mocker' has no option 'blok_size'"),
    ("- name: a\n  options: {block_size: big}\n", "model 'a': options.block_size='big': expected int"),
    ("- name: a\n  options: {block_size: 0}\n", "options.block_size=0: must be >= 2"),
    ("- name: a\n  engine: nope\n", "model 'a': unknown engine 'nope'"),
    ("- name: a\n  kind: painting\n", "model 'a': kind 'painting' must be one of"),
    ("- name: a\n  instances: many\n", "model 'a': 'instances' must be a int"),
    ("- name: a\n  modle: x\n", "model 'a': unknown key(s) ['modle']"),
    ("- name: a\n- name: a\n", "model name(s) ['a'] appear more than once"),
    ("models: []\n", "expected a non-empty list"),
    ("models: [\n", "not valid YAML"),
])
def test_bad_entries_are_one_line_errors(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        specs_from_file(_file(tmp_path, text), _engines(), env={})
    assert fragment in str(e.value) and "\n" not in str(e.value)


class _ChatOnly:
    @hookimpl
    def register_engines(self, register: Any) -> None:
        register("chatonly", lambda args: None, description="a chat-only engine")


async def test_an_engine_without_a_generator_of_the_kind_is_refused(tmp_path: Path) -> None:
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.register_module(_ChatOnly(), "chat-only")
    path = _file(tmp_path, "- name: pics\n  kind: image\n  engine: chatonly\n")
    settings = resolve(serve_options(plugins), {"config": path}, env={})
    with pytest.raises(ConfigError, match="model 'pics': engine 'chatonly' does not serve image models"):
        await build_state(settings, plugins)


async def test_a_media_model_needs_no_model_files(tmp_path: Path) -> None:
    plugins = get_plugins()
    path = _file(tmp_path, "- name: pics\n  kind: image\n  options: {speedup_ratio: 0}\n"
                           "- {kind: audio, options: {speedup_ratio: 0}}\n")
    state = await build_state(resolve(serve_options(plugins), {"config": path}, env={}), plugins)
    try:
        assert state.models["pics"].kind == "image" and state.models["pics"].tokenizer is None
        assert state.models["mocker-audio"].kind == "audio"  # no name, no directory: ENGINE-KIND
        assert state.ready()
    finally:
        await stop_engines(state)


async def test_two_models_from_one_file_have_their_own_pools(tmp_path: Path) -> None:
    plugins = get_plugins()
    path = _file(tmp_path, "- name: a\n  options: {speedup_ratio: 0, block_size: 32}\n"
                           "- name: b\n  instances: 2\n  options: {speedup_ratio: 0}\n")
    state = await build_state(resolve(serve_options(plugins), {"config": path}, env={}), plugins)
    try:
        a, b = state.models["a"], state.models["b"]
        assert (a.block_size, len(a.pool.instances), b.block_size, len(b.pool.instances)) == (32, 1, 64, 2)
        assert not set(a.pool.instances) & set(b.pool.instances)  # instance ids are unique server-wide
        assert state.ready()
    finally:
        await stop_engines(state)


def test_config_and_single_model_flags_do_not_mix(tmp_path: Path) -> None:
    plugins = get_plugins()
    path = _file(tmp_path, "- name: a\n")
    settings = resolve(serve_options(plugins), {"config": path, "served_model_name": "x"}, env={})
    with pytest.raises(ConfigError, match="do not also pass --served-model-name"):
        model_specs(settings, plugins)


def test_serve_help_shows_the_chosen_engines_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    mocker_help = capsys.readouterr().out
    assert "--speedup-ratio" in mocker_help and "--block-size" in mocker_help
    if "vllm" not in get_plugins().registered("engine"):
        pytest.skip("the vLLM plugin is not installed")
    with pytest.raises(SystemExit):
        main(["serve", "--engine", "vllm", "--help"])
    vllm_help = capsys.readouterr().out
    assert "--gpu-memory-utilization" in vllm_help and "--speedup-ratio" not in vllm_help
    # --block-size shows vLLM's default (unset: vLLM decides), not the mocker's 64
    entry = re.search(r"\n  --block-size BLOCK_SIZE(.*?)\n  --", vllm_help, re.S)
    assert entry and "default unset" in " ".join(entry.group(1).split())
    # the mocker's options are not accepted for vLLM
    assert main(["serve", "--engine", "vllm", "--speedup-ratio", "0", "--port", "1"]) == 2
