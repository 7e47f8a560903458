"""Hook implementations: registers the `sglang` engine (SGLang imported lazily, only when it is used)."""

from __future__ import annotations

from typing import Any, Callable

from dynamo_mono.api import hookimpl

from dynamo_mono_sglang.options import SGLANG_OPTIONS


def create_engine(args: Any) -> Any:
    """Engine factory: imports SGLang only here, so the plugin lists fine without it."""
    from dynamo_mono_sglang.engine import SglangEngine

    return SglangEngine(args)


@hookimpl
def register_engines(register: Callable[..., None]) -> None:
    register(
        "sglang",
        create_engine,
        options=SGLANG_OPTIONS,
        requires=["sglang"],
        install_hint="pip install 'sglang==0.5.23' dynamo-mono-sglang (CUDA GPU machines; plugins/sglang/gpu-smoke.sh)",
        description="SGLang Engine in-process (skip_tokenizer_init: token in / token out), KV events from its ZMQ "
                    "publisher into the KV router, load from its scheduler snapshots",
        passthrough_args=True,
        kinds=("chat",),
    )
