"""Hook implementations: registers the `diffusers` media generator for images, video and audio (torch and
diffusers are imported only when an instance is built)."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import EngineArgs, RegisterModality, hookimpl

from dynamo_mono_diffusers.options import DIFFUSERS_OPTIONS, DiffusersSettings

KINDS = ("image", "video", "audio")
INSTALL_HINT = "pip install dynamo-mono-diffusers (it brings diffusers; torch from your platform's wheel)"


def create_generator(args: EngineArgs) -> Any:
    """Media generator factory: checks the options (ConfigError), loads nothing until start()."""
    from dynamo_mono_diffusers.generator import DiffusersGenerator

    return DiffusersGenerator(args, DiffusersSettings.from_options(args.options, args.kind))


@hookimpl
def register_modalities(register: RegisterModality) -> None:
    for kind in KINDS:
        register(kind, "diffusers", create_generator, options=DIFFUSERS_OPTIONS, requires=("diffusers", "torch"),
                 install_hint=INSTALL_HINT,
                 description=f"{kind} generation with a local diffusers pipeline directory "
                             "(DiffusionPipeline.from_pretrained, one worker thread per instance)")
