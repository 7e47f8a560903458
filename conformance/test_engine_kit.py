"""The engine conformance kit (dynamo_mono.testing) over every engine this repo ships: one server per target.

Adding an engine is one KitTarget entry in TARGETS (and its marks in MARKS when it needs a heavy dependency).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from dynamo_mono.testing import MOCKER_TARGET, KitTarget
from dynamo_mono.testing.kit_tests import *  # noqa: F401,F403 - the kit's cases
from dynamo_mono.testing.kit_tests import kit_fixture

ROOT = Path(__file__).resolve().parent.parent

# tests/vllm/conftest.py's CPU settings (small KV space, one OpenMP thread, in-process EngineCore).
_VLLM_ENV = (("VLLM_HOST_IP", "127.0.0.1"), ("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
             ("OMP_NUM_THREADS", "1"), ("VLLM_ENABLE_V1_MULTIPROCESSING", "0"), ("VLLM_NO_USAGE_STATS", "1"),
             ("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false"))


def _tiny_llama() -> list[str]:
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    path = build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-v1", seed=0)
    return ["--model", str(path), "--served-model-name", "tiny"]


VLLM_CPU_TARGET = KitTarget(
    name="vllm-cpu",
    serve_args=("--engine", "vllm", "--dtype", "float32", "--enforce-eager", "--block-size", "32",
                "--max-model-len", "2048", "--num-gpu-blocks-override", "160", "--max-num-seqs", "1",
                "--scheduling-policy", "priority"),
    env=_VLLM_ENV,
    capabilities=frozenset({"logprobs", "n", "priority", "kv_events"}),
    serial=True,
    requires=("vllm", "dynamo_mono_vllm"),
    skip_reason="vLLM is not installed (CPU: plugins/vllm/install-cpu.sh)",
    block_size=32,
    vocab_size=2629,  # the tiny Llama's embedding rows (vLLM refuses stop ids past them)
    prepare=_tiny_llama,
    start_timeout=240,
    max_tokens_long=1900,
)

# SGLang's Python API as the fake in plugins/sglang/fake reproduces it (sglang 0.5.23), driven by the mocker.
SGLANG_FAKE_TARGET = KitTarget(
    name="sglang-fake",
    serve_args=("--engine", "sglang", "--page-size", "16", "--max-total-tokens", "4096", "--dp-size", "2",
                "--enable-priority-scheduling", "--max-running-requests", "1"),
    serial=True,
    pythonpath=(str(ROOT / "plugins" / "sglang" / "fake"), str(ROOT / "plugins" / "sglang"), str(ROOT)),
    capabilities=frozenset({"logprobs", "n", "priority", "dp_rank", "kv_events", "fault"}),
    block_size=16,
    fault_body={"prompt": [7, 7, 7, 7, 7, 7, 7, 7]},
    env=(("SGLANG_FAKE_FAULT_PROMPT", "7,7,7,7,7,7,7,7"),),
    max_tokens_long=1500,
)

# TensorRT-LLM's LLM API as the fake in plugins/trtllm/fake reproduces it, driven by the mocker. TRT-LLM's LLM API
# has no request priority (the plugin refuses it per request); dp ranks need attention DP.
TRTLLM_FAKE_TARGET = KitTarget(
    name="trtllm-fake",
    serve_args=("--engine", "trtllm", "--tokens-per-block", "16", "--kv-cache-max-tokens", "4096",
                "--max-batch-size", "64", "--tensor-parallel-size", "2", "--enable-attention-dp"),
    pythonpath=(str(ROOT / "plugins" / "trtllm" / "fake"), str(ROOT / "plugins" / "trtllm"), str(ROOT)),
    capabilities=frozenset({"logprobs", "n", "dp_rank", "kv_events"}),
    env=(("TRTLLM_FAKE_SPEEDUP_RATIO", "2"),),
    block_size=16,
    max_tokens_long=1500,
)

TARGETS: list[KitTarget] = [MOCKER_TARGET, VLLM_CPU_TARGET, SGLANG_FAKE_TARGET, TRTLLM_FAKE_TARGET]

# A real SGLang on a GPU machine (plugins/sglang/gpu-smoke.sh: `python -m dynamo_mono.testing --target
# conformance.test_engine_kit:SGLANG_GPU_TARGET`); not in TARGETS: it needs CUDA and a model.
_GPU_DP = int(os.environ.get("DYN_KIT_SGLANG_DP", "1"))
SGLANG_GPU_TARGET = KitTarget(
    name="sglang",
    serve_args=("--engine", "sglang", "--model", os.environ.get("DYN_KIT_SGLANG_MODEL", ""),
                "--served-model-name", "kit", "--page-size", "16", "--dp-size", str(_GPU_DP),
                "--max-total-tokens", os.environ.get("DYN_KIT_SGLANG_KV_TOKENS", "16384"),
                "--enable-priority-scheduling", "--max-running-requests", "1", "--max-model-len", "4096"),
    capabilities=frozenset({"logprobs", "n", "priority", "kv_events"} | ({"dp_rank"} if _GPU_DP > 1 else set())),
    requires=("sglang", "dynamo_mono_sglang"),
    skip_reason="sglang is not installed (GPU machines: plugins/sglang/gpu-smoke.sh)",
    block_size=16,
    vocab_size=int(os.environ.get("DYN_KIT_VOCAB", "2636")),
    start_timeout=900,
    max_tokens_long=3000,
    serial=True,
)
# vLLM on a CUDA GPU (plugins/vllm/gpu-smoke.sh: `python -m dynamo_mono.testing --target
# conformance.test_engine_kit:VLLM_GPU_TARGET`); not in TARGETS: it needs CUDA. DYN_KIT_VLLM_MODEL: a local model dir.
VLLM_GPU_TARGET = KitTarget(
    name="vllm-gpu",
    serve_args=("--engine", "vllm", "--model", os.environ.get("DYN_KIT_VLLM_MODEL", ""), "--served-model-name", "kit",
                "--block-size", "16", "--max-model-len", "4096", "--num-gpu-blocks-override", "512",
                "--max-num-seqs", "1", "--scheduling-policy", "priority", "--gpu-memory-utilization", "0.3"),
    capabilities=frozenset({"logprobs", "n", "priority", "kv_events"}),
    requires=("vllm", "dynamo_mono_vllm"),
    skip_reason="vLLM is not installed (GPU machines: plugins/vllm/gpu-smoke.sh)",
    block_size=16,
    vocab_size=int(os.environ.get("DYN_KIT_VOCAB", "2629")),
    start_timeout=900,
    max_tokens_long=3000,
    serial=True,
)
MARKS = {"vllm-cpu": [pytest.mark.vllm]}

pytestmark = pytest.mark.timeout(600)

kit = kit_fixture(TARGETS, MARKS)
