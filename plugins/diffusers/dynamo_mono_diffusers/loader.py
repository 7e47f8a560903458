"""Loading a local diffusers pipeline directory onto its device, and refusing one that does not fit the model kind."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo_mono.api import ConfigError, MediaLimits

from dynamo_mono_diffusers.limits import media_limits
from dynamo_mono_diffusers.options import DiffusersSettings
from dynamo_mono_diffusers.traits import PipelineTraits, inspect_pipeline, mismatch

log = logging.getLogger("dynamo_mono.diffusers")


@dataclass(slots=True)
class LoadedPipeline:
    """A pipeline on its device, what it can do, and the limits the instance announces."""

    pipe: Any
    traits: PipelineTraits
    limits: MediaLimits
    device: str
    dtype: str
    load_s: float


def load_pipeline(model_path: str, settings: DiffusersSettings, kind: str, instance_id: int = 0) -> LoadedPipeline:
    """from_pretrained(local_files_only=True) on the chosen device; ConfigError on anything the user must fix."""
    import torch

    start = time.perf_counter()
    if not model_path:
        raise ConfigError("the diffusers engine needs --model DIR, a local diffusers pipeline directory")
    path = Path(model_path)
    if not (path / "model_index.json").is_file():
        raise ConfigError(f"{path} is not a diffusers pipeline directory (it has no model_index.json)")
    cls = pipeline_class(settings.pipeline_class)
    device = resolve_device(settings.device, instance_id)
    dtype = resolve_dtype(settings.dtype, device)
    kwargs: dict[str, Any] = {"local_files_only": True, _dtype_keyword(): getattr(torch, dtype)}
    if settings.variant:
        kwargs["variant"] = settings.variant
    _quiet_loading()
    try:
        pipe = cls.from_pretrained(str(path), **kwargs)
    except Exception as exc:  # a missing component, a weight file of another variant, an unknown class name...
        raise ConfigError(f"cannot load the diffusers pipeline in {path}: {type(exc).__name__}: {exc}") from None
    traits = inspect_pipeline(pipe)
    refused = mismatch(traits, kind, str(path))
    if refused:
        raise ConfigError(refused)
    _check_text_cleaning(pipe)
    limits = media_limits(traits, settings, kind)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return LoadedPipeline(pipe, traits, limits, device, dtype, time.perf_counter() - start)


def pipeline_class(name: str | None) -> Any:
    """The diffusers class --pipeline-class names (DiffusionPipeline: the one model_index.json names)."""
    import diffusers

    if name is None:
        return diffusers.DiffusionPipeline
    try:
        cls = getattr(diffusers, name)
    except (AttributeError, ImportError, RuntimeError):  # diffusers resolves its names lazily
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        what = "is not a pipeline class" if isinstance(cls, type) else "is not a class of"
        raise ConfigError(f"invalid --pipeline-class={name!r}: {what} diffusers {diffusers.__version__} "
                          f"(give a pipeline class name such as StableDiffusionPipeline or WanPipeline)")
    return cls


def resolve_device(device: str, instance_id: int = 0) -> str:
    """cpu | cuda[:N]; auto: a CUDA device when there is one (instances spread over the devices), else the CPU."""
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{instance_id % torch.cuda.device_count()}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device={device}: torch {torch.__version__} sees no CUDA device")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device={device}: there are {torch.cuda.device_count()} CUDA devices")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """float32 on the CPU; bfloat16 on CUDA where the device has it, else float16 (--dtype auto)."""
    if dtype != "auto":
        return dtype
    if not device.startswith("cuda"):
        return "float32"
    import torch

    with torch.cuda.device(device):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _quiet_loading() -> None:
    """No per-component progress bars in the server log (diffusers' and transformers' loaders draw them)."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _dtype_keyword() -> str:
    """`dtype` where diffusers takes it (torch_dtype is deprecated there), else `torch_dtype`."""
    from diffusers.pipelines import pipeline_utils

    return "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"


def _check_text_cleaning(pipe: Any) -> None:
    """Wan-style pipelines clean prompts with ftfy, imported only if installed and needed at the first request."""
    module = sys.modules.get(type(pipe).__module__)
    available = getattr(module, "is_ftfy_available", None)
    if callable(available) and not available():
        raise ConfigError(f"{type(pipe).__name__} needs the ftfy package to clean prompts: pip install ftfy")
