"""Fixtures of the vLLM plugin tests: skip without vLLM, a tiny random Llama, one shared 2-instance server, a tiny
random Qwen2-VL."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("dynamo_mono_vllm") is not None
SKIP_REASON = "vLLM is not installed (CPU: plugins/vllm/install-cpu.sh; GPU: pip install vllm dynamo-mono-vllm)"

# Measured on 2-core CPU machines: small KV space, no thread pinning, one OpenMP thread per engine.
VLLM_ENV = {
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

BLOCK_SIZE = 32
NUM_BLOCKS = 160
ENGINE_FLAGS = ["--engine", "vllm", "--dtype", "float32", "--enforce-eager", "--block-size", str(BLOCK_SIZE),
                "--max-model-len", "2048", "--num-gpu-blocks-override", str(NUM_BLOCKS),
                # a vLLM flag dynamo-mono does not define: passed through to vLLM's own parser. A random-weight
                # model would otherwise fill JSON with the whitespace xgrammar allows between tokens.
                "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.vllm)
            if not HAVE_VLLM:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session", autouse=True)
def vllm_env() -> Iterator[None]:
    """The CPU env vars for in-process engines too (restored afterwards)."""
    old = {k: os.environ.get(k) for k in VLLM_ENV}
    os.environ.update(VLLM_ENV)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Random-weight LlamaForCausalLM (hidden 128, 2 layers, 4 heads of 32) with the embedded ChatML tokenizer.

    Deterministic (fixed seed), so it is cached across runs in the temp dir."""
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    return build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-v1", seed=0)


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path):
    """One server, two vLLM instances behind the KV router, shared by the HTTP tests."""
    from conformance.server import start_server

    srv = start_server([*ENGINE_FLAGS, "--model", str(tiny_model), "--num-instances", "2", "--router-mode", "kv",
                        "--served-model-name", "tiny"], env=VLLM_ENV, timeout=240)
    yield srv
    srv.stop(timeout=30)


def torchvision_missing() -> str | None:
    """Why vLLM cannot serve Qwen2-VL here (its processors import torchvision), or None."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    return ("torchvision does not import (plugins/vllm/install-cpu.sh installs and patches it): "
            + (r.stderr.strip().splitlines() or ["?"])[-1])


@pytest.fixture(scope="session")
def tiny_vlm() -> Path:
    """Random-weight Qwen2-VL (text: hidden 128, 2 layers, 4 heads of 32; vision: 2 blocks of 64, patch 14, 2x2
    merge), the embedded ChatML tokenizer plus media tokens; images take 4 to 64 placeholder tokens. Cached in
    the temp dir (deterministic)."""
    why = torchvision_missing()
    if why:
        pytest.skip(why)
    from dynamo_mono_vllm.tiny_vlm import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-qwen2-vl-v2", seed=0)
