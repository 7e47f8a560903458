"""The example third-party plugin, installed from plugins/example, serves through the entry-point path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from conformance.server import start_server

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """pip-install the example plugin into a private directory (no network, no change to this env)."""
    target = tmp_path_factory.mktemp("example-plugin")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(ROOT / "plugins" / "example")], check=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return str(target)


def _env(plugin_path: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([plugin_path, str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_plugins_command_lists_it(plugin_path: str) -> None:
    out = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "plugins"], capture_output=True, text=True,
                         env={**os.environ, **_env(plugin_path)}, check=True).stdout
    assert "example" in out and "dynamo-mono-example 0.1.0" in out
    assert "engine" in out and "echo" in out and "brackets" in out


def test_serves_through_example_engine_and_parser(plugin_path: str) -> None:
    srv = start_server(["--engine", "echo", "--reasoning-parser", "brackets"], env=_env(plugin_path))
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model="tiny-chatml", max_tokens=50, messages=[
            {"role": "user", "content": "[[let me think]]The answer is 42."}])
        msg = r.choices[0].message
        assert msg.content == "The answer is 42."
        assert msg.model_extra.get("reasoning_content") == "let me think"
    finally:
        srv.stop()


def test_broken_plugin_is_reported_not_fatal(tmp_path: Path, plugin_path: str) -> None:
    """A plugin that fails to import is listed with its error; the server still serves the mocker."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dynamo_mono]\nbroken = broken_plugin_mod\n")
    (tmp_path / "broken_plugin_mod.py").write_text("raise ImportError('needs libfoo')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "plugins"], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert "broken" in out and "needs libfoo" in out
    srv = start_server(["--speedup-ratio", "0"], env={"PYTHONPATH": env["PYTHONPATH"]})
    try:
        assert "broken" in srv.log() and "needs libfoo" in srv.log()
    finally:
        srv.stop()
    bad = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "serve", "--engine", "broken", "--port", "0"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "needs libfoo" in bad.stderr
