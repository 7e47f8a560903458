"""Hook implementations: registers the `trtllm` engine (tensorrt_llm imported lazily, only when it is used)."""

from __future__ import annotations

from typing import Any, Callable

from dynamo_mono.api import hookimpl

from dynamo_mono_trtllm.options import TRTLLM_OPTIONS


def create_engine(args: Any) -> Any:
    """Engine factory: imports TensorRT-LLM only here, so the plugin lists fine without it."""
    from dynamo_mono_trtllm.engine import TrtllmEngine

    return TrtllmEngine(args)


@hookimpl
def register_engines(register: Callable[..., None]) -> None:
    register(
        "trtllm",
        create_engine,
        options=TRTLLM_OPTIONS,
        requires=["tensorrt_llm"],
        install_hint="pip install --extra-index-url https://pypi.nvidia.com tensorrt-llm==1.3.0rc27 "
                     "dynamo-mono-trtllm (NVIDIA GPU, CUDA 12/13; see plugins/trtllm/gpu-smoke.sh)",
        description="TensorRT-LLM LLM API (PyTorch backend) in process: token in / token out, KV cache events and "
                    "iteration stats into the KV router; other LlmArgs fields pass through as --field-name VALUE",
        passthrough_args=True,
        kinds=("chat",),
    )
