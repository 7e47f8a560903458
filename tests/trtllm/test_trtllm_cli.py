"""The trtllm plugin from the command line: listed as unavailable with an install hint when tensorrt_llm is not
importable (found through its source-tree entry point on PYTHONPATH), and its options under serve --help."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.trtllm.conftest import PLUGIN_DIR, ROOT, server_env

pytestmark = pytest.mark.timeout(120)


def _run(args: list[str], env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "dynamo_mono.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, check=True, timeout=90, cwd=ROOT).stdout


def test_plugins_lists_trtllm_unavailable_with_install_hint() -> None:
    out = _run(["plugins"], {"PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), str(ROOT)])})
    line = next(line for line in out.splitlines() if line.strip().startswith("engine") and " trtllm " in line)
    assert "unavailable: missing tensorrt_llm" in line and "pip install" in line and "tensorrt-llm==" in line


def test_serve_help_shows_trtllm_options() -> None:
    out = _run(["serve", "--engine", "trtllm", "--help"], server_env())
    for flag in ("--tensor-parallel-size", "--max-batch-size", "--max-num-tokens", "--tokens-per-block",
                 "--free-gpu-memory-fraction", "--kv-cache-max-tokens", "--event-buffer-max-size",
                 "--enable-attention-dp"):
        assert flag in out, flag
