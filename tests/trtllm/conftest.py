"""Fixtures of the TensorRT-LLM plugin tests: they run against the fake tensorrt_llm (plugins/trtllm/fake), which
reproduces the real LLM API's import paths, signatures, output objects and event / stats formats over the mocker.
The fake is put first on sys.path here (and on PYTHONPATH for servers), so these tests never pick up a real
TensorRT-LLM: plugins/trtllm/gpu-smoke.sh is where the real one runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_DIR = ROOT / "plugins" / "trtllm" / "fake"
PLUGIN_DIR = ROOT / "plugins" / "trtllm"

for p in (str(PLUGIN_DIR), str(FAKE_DIR)):
    if p not in sys.path:
        sys.path.insert(0, p)
for name in [m for m in sys.modules if m == "tensorrt_llm" or m.startswith("tensorrt_llm.")]:
    del sys.modules[name]


def server_env(speedup: float = 1.0) -> dict[str, str]:
    """Environment of a `dynamo-mono serve --engine trtllm` subprocess on the fake."""
    path = [str(FAKE_DIR), str(PLUGIN_DIR), str(ROOT)]
    old = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(path + ([old] if old else [])),
            "TRTLLM_FAKE_SPEEDUP_RATIO": str(speedup)}
