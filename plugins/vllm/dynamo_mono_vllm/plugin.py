"""Hook implementations: registers the `vllm` engine (vLLM imported lazily, only when it is used)."""

from __future__ import annotations

from typing import Any, Callable

from dynamo_mono.api import hookimpl

from dynamo_mono_vllm.options import VLLM_OPTIONS


def create_engine(args: Any) -> Any:
    """Engine factory: imports vLLM only here, so the plugin lists fine without it."""
    from dynamo_mono_vllm.engine import VllmEngine

    return VllmEngine(args)


@hookimpl
def register_engines(register: Callable[..., None]) -> None:
    register(
        "vllm",
        create_engine,
        options=VLLM_OPTIONS,
        requires=["vllm"],
        install_hint="pip install vllm dynamo-mono-vllm (CPU: plugins/vllm/install-cpu.sh)",
        description="vLLM AsyncLLM instances: token in / token out (images / video of vision-language models as "
                    "multi_modal_data), KV events into the KV router; pooling models (embed) for embedding models",
        passthrough_args=True,
        kinds=("chat", "embedding"),
    )
