"""Options of the diffusers media generator and their validated, typed form (no torch / diffusers imports here)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from dynamo_mono.api import ConfigError, Option

_G = "engine: diffusers"
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# Options the mocker's media generators also have carry the same names and meanings (max_image_size,
# default_image_size, *_num_inference_steps, *_num_frames, *_fps, max_audio_seconds); the defaults are the pipeline's.
DIFFUSERS_OPTIONS: list[Option] = [
    Option("device", str, "auto", "where the pipeline runs: auto (a CUDA device when torch sees one, instance i on "
           "cuda:i mod the device count; else the CPU), cpu, cuda or cuda:N", _G),
    Option("dtype", str, "auto", "weights and activations: auto (bfloat16 on CUDA where supported, else float16; "
           "float32 on the CPU), float32, float16 or bfloat16", _G, choices=DTYPES),
    Option("pipeline_class", str, None, "diffusers pipeline class to load the model directory with, e.g. "
           "StableDiffusionPipeline (default: the class its model_index.json names)", _G),
    Option("variant", str, None, "weight file variant to load, e.g. fp16 (files named *.fp16.safetensors)", _G),
    Option("max_num_inference_steps", int, 50, "most denoising steps a request may ask for", _G, min=1),
    Option("default_num_inference_steps", int, None, "denoising steps of a request that names none (default: the "
           "pipeline's own, at most --max-num-inference-steps)", _G, min=1),
    Option("default_guidance_scale", float, None, "guidance scale of a request that names none (default: the "
           "pipeline's own); refused for pipelines without guidance", _G, min=0.0),
    Option("max_num_outputs", int, 10, "most outputs (n) one request may ask for; a pipeline that batches makes them "
           "in one call", _G, min=1),
    Option("max_image_size", int, 1024, "image and video models: largest width and height, in pixels", _G, min=8),
    Option("default_image_size", str, None, "image and video models: WIDTHxHEIGHT made when a request names no size "
           "(default: the pipeline's own, scaled down to --max-image-size)", _G, metavar="WxH"),
    Option("max_num_frames", int, None, "video models: most frames a request may ask for (default: the pipeline's "
           "default frame count)", _G, min=1),
    Option("default_num_frames", int, None, "video models: frames of a request that names none (default: the "
           "pipeline's own)", _G, min=1),
    Option("default_fps", int, None, "video models: frames per second of a request that names none (default: the "
           "pipeline's own where it is conditioned on fps, else 16)", _G, min=1),
    Option("max_fps", int, 60, "video models: highest fps a request may ask for", _G, min=1),
    Option("default_audio_seconds", float, None, "audio models: length of the audio of a request that names none "
           "(default: the pipeline's own)", _G, min=0.0, min_exclusive=True),
    Option("max_audio_seconds", float, 30.0, "audio models: longest audio a request may ask for, in seconds (at most "
           "what the pipeline can make)", _G, min=0.0, min_exclusive=True),
]

_DEFAULTS = {o.name: o.default for o in DIFFUSERS_OPTIONS}
# Options that mean something for some kinds only: a value other than the default for another kind is refused.
_KIND_ONLY = {
    "max_image_size": ("image", "video"), "default_image_size": ("image", "video"),
    "max_num_frames": ("video",), "default_num_frames": ("video",), "default_fps": ("video",), "max_fps": ("video",),
    "default_audio_seconds": ("audio",), "max_audio_seconds": ("audio",),
}


@dataclass(frozen=True, slots=True)
class DiffusersSettings:
    """The resolved options of one diffusers instance (None: the pipeline's own value)."""

    device: str = "auto"
    dtype: str = "auto"
    pipeline_class: str | None = None
    variant: str | None = None
    max_num_inference_steps: int = 50
    default_num_inference_steps: int | None = None
    default_guidance_scale: float | None = None
    max_num_outputs: int = 10
    max_image_size: int = 1024
    default_image_size: str | None = None
    default_width: int | None = None  # parsed from default_image_size
    default_height: int | None = None
    max_num_frames: int | None = None
    default_num_frames: int | None = None
    default_fps: int | None = None
    max_fps: int = 60
    default_audio_seconds: float | None = None
    max_audio_seconds: float = 30.0
    max_audio_seconds_set: bool = False  # given by the user (else it may shrink to what the pipeline can make)

    @classmethod
    def from_options(cls, options: Mapping[str, Any], kind: str) -> "DiffusersSettings":
        """Typed settings from EngineArgs.options; ConfigError on a bad value or an option of another model kind."""
        values = {**_DEFAULTS, **{k: v for k, v in options.items() if k in _DEFAULTS}}
        for name, kinds in _KIND_ONLY.items():
            if kind not in kinds and values[name] != _DEFAULTS[name]:
                raise ConfigError(f"--{name.replace('_', '-')} applies to {' and '.join(kinds)} models only, not to "
                                  f"{kind} models")
        if not _DEVICE.fullmatch(str(values["device"])):
            raise ConfigError(f"invalid --device={values['device']!r}: must be auto, cpu, cuda or cuda:N")
        if values["dtype"] not in DTYPES:
            raise ConfigError(f"invalid --dtype={values['dtype']!r}: must be one of {', '.join(DTYPES)}")
        _at_most(values, "default_num_inference_steps", "max_num_inference_steps")
        values["default_width"], values["default_height"] = _parse_size(values["default_image_size"])
        _at_most(values, "default_width", "max_image_size")
        _at_most(values, "default_height", "max_image_size")
        _at_most(values, "default_num_frames", "max_num_frames")
        _at_most(values, "default_fps", "max_fps")
        _at_most(values, "default_audio_seconds", "max_audio_seconds")
        values["max_audio_seconds_set"] = values["max_audio_seconds"] != _DEFAULTS["max_audio_seconds"]
        return cls(**values)


def _parse_size(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    w, sep, h = text.lower().partition("x")
    if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ConfigError(f"invalid --default-image-size={text!r}: must be WIDTHxHEIGHT, e.g. 512x512")
    return int(w), int(h)


def _at_most(values: dict[str, Any], name: str, limit: str) -> None:
    value, top = values[name], values[limit]
    if value is not None and top is not None and value > top:
        flag = "default-image-size" if name in ("default_width", "default_height") else name.replace("_", "-")
        raise ConfigError(f"--{flag}: {value} is above --{limit.replace('_', '-')}={top}")
