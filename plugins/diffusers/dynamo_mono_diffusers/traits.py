"""What a loaded diffusers pipeline makes and which request fields it acts on, read from its class, its __call__
signature and its components' configs."""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any

# Keyword names diffusers pipelines use for the same thing.
_BATCH_PARAMS = ("num_images_per_prompt", "num_videos_per_prompt", "num_waveforms_per_prompt",
                 "num_audios_per_prompt")
_FRAMES_PARAMS = ("num_frames", "video_length")
_FPS_PARAMS = ("fps", "frame_rate", "target_fps")
_SECONDS_PARAMS = ("audio_length_in_s", "audio_end_in_s")
# Image-to-video pipelines whose `image` defaults to None in the signature but is required all the same.
_NEEDS_IMAGE = re.compile(r"ImageToVideo|I2V|Img2Vid")
SERVED_TASKS = "text-to-image, text-to-video, image-to-video and text-to-audio"


@dataclass(frozen=True, slots=True)
class PipelineTraits:
    """One pipeline class's abilities and defaults (None where the pipeline has no such value)."""

    class_name: str
    makes: str | None  # "image" | "video" | "audio"; None: nothing this plugin serves
    task: str  # "text-to-image", ... or, when makes is None, why it cannot be served
    batch_param: str | None = None  # one call makes n outputs through this keyword
    steps: bool = False  # takes num_inference_steps
    guidance: bool = False  # guidance_scale changes the output
    negative_prompt: bool = False  # negative_prompt changes the output (classifier-free guidance, scale > 1)
    step_callback: str | None = None  # "callback_on_step_end" | "callback" (legacy) | None
    frames_param: str | None = None
    fps_param: str | None = None  # the pipeline is conditioned on the frame rate through this keyword
    image_param: str | None = None  # image-to-video: the starting image
    image_required: bool = False
    seconds_param: str | None = None
    default_steps: int | None = None
    default_guidance: float | None = None
    default_width: int | None = None
    default_height: int | None = None
    default_frames: int | None = None
    default_fps: int | None = None
    default_seconds: float | None = None
    min_seconds: float = 0.0
    max_seconds: float | None = None
    sample_rate: int | None = None
    size_multiple: int = 8
    frames_multiple: int = 1  # frames must be frames_multiple * k + 1 (the VAE's temporal factor; 1 = any count)


def inspect_pipeline(pipe: Any) -> PipelineTraits:
    """The traits of a loaded pipeline (its class decides what it makes; its components give the defaults)."""
    cls = type(pipe)
    params = inspect.signature(cls.__call__).parameters
    makes, task = classify(cls, params)
    common = dict(class_name=cls.__name__, makes=makes, task=task)
    if makes is None:
        return PipelineTraits(**common)

    def default(name: str | None) -> Any:
        p = params.get(name) if name else None
        return None if p is None or p.default is inspect.Parameter.empty else p.default

    guidance = _guidance_acts(pipe, params)
    batch = next((p for p in _BATCH_PARAMS if p in params), None)
    if hasattr(pipe, "score_waveforms"):
        batch = None  # it reorders a batch's waveforms by text similarity: output i would not be seed + i's
    common.update(
        batch_param=batch,
        steps="num_inference_steps" in params,
        guidance=guidance,
        # true_cfg_scale: the negative prompt acts only above its neutral 1.0, which no request field sets.
        negative_prompt=guidance and "negative_prompt" in params and "true_cfg_scale" not in params,
        step_callback=next((p for p in ("callback_on_step_end", "callback") if p in params), None),
        default_steps=_int(default("num_inference_steps")),
        default_guidance=_float(default("guidance_scale")) if guidance else None,
    )
    if makes == "audio":
        seconds = next(p for p in _SECONDS_PARAMS if p in params)
        return PipelineTraits(**common, seconds_param=seconds, **_audio(pipe, _float(default(seconds))))
    width, height = _default_size(pipe, params)
    common.update(default_width=width, default_height=height, size_multiple=_size_multiple(pipe))
    if makes == "image":
        return PipelineTraits(**common)
    frames = next(p for p in _FRAMES_PARAMS if p in params)
    fps = next((p for p in _FPS_PARAMS if p in params), None)
    image = "image" if "image" in params else None
    return PipelineTraits(
        **common, frames_param=frames, fps_param=fps, image_param=image,
        image_required=image is not None and _image_required(cls, params),
        default_frames=_int(default(frames)), default_fps=_int(default(fps)),
        frames_multiple=_int(getattr(pipe, "vae_scale_factor_temporal", None)) or 1)


def classify(cls: type, params: Any) -> tuple[str | None, str]:
    """(kind, task) of a pipeline class from its __call__ keywords; kind None with the reason it is not served."""
    name = cls.__name__
    if "prompt" not in params:
        return None, "an unconditional pipeline (it takes no text prompt)"
    if any(p in params for p in _SECONDS_PARAMS):
        return "audio", "text-to-audio"
    if any(p in params for p in _FRAMES_PARAMS):
        if re.search(r"VideoToVideo|Video2Video|V2V", name):
            return None, "a video-to-video pipeline (it needs an input video)"
        if "image" in params:
            return "video", ("image-to-video" if _image_required(cls, params)
                             else "text-to-video (optionally from an image)")
        return "video", "text-to-video"
    if "mask_image" in params:
        return None, "an inpainting pipeline (it needs an image and a mask)"
    if "control_image" in params or "ControlNet" in name or ("image" in params and name not in _text_to_image()):
        return None, "an image-to-image pipeline (it needs an input image)"
    if "height" in params or any(p in params for p in _BATCH_PARAMS):
        return "image", "text-to-image"
    return None, "a pipeline whose output cannot be told from its parameters (no size, frames or audio length)"


def mismatch(traits: PipelineTraits, kind: str, model_dir: str) -> str | None:
    """Why the pipeline cannot serve a model of `kind` (None: it can)."""
    if traits.makes == kind:
        return None
    where = f"the pipeline in {model_dir} is {traits.class_name}"
    if traits.makes is None:
        return f"{where}, {traits.task}: the diffusers engine serves {SERVED_TASKS} pipelines"
    article = "an" if traits.task[0] in "aeiou" else "a"
    return f"{where}, {article} {traits.task} pipeline: serve it with --model-kind {traits.makes}"


def _image_required(cls: type, params: Any) -> bool:
    return params["image"].default is inspect.Parameter.empty or bool(_NEEDS_IMAGE.search(cls.__name__))


def _text_to_image() -> set[str]:
    """Class names diffusers' AutoPipelineForText2Image maps to: those whose `image` keyword is optional."""
    from diffusers.pipelines.auto_pipeline import AUTO_TEXT2IMAGE_PIPELINES_MAPPING

    return {c.__name__ for c in AUTO_TEXT2IMAGE_PIPELINES_MAPPING.values()}


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)


def _config(component: Any, key: str) -> Any:
    return getattr(getattr(component, "config", None), key, None)


def _guidance_acts(pipe: Any, params: Any) -> bool:
    if "guidance_scale" not in params:
        return False
    # Guidance-distilled transformers embed the scale; without that embedding (e.g. FLUX.1-schnell) it is unused.
    return _config(_denoiser(pipe), "guidance_embeds") is not False


def _spatial_scale(pipe: Any) -> int:
    return _int(getattr(pipe, "vae_scale_factor_spatial", None)) or _int(getattr(pipe, "vae_scale_factor", None)) or 8


def _size_multiple(pipe: Any) -> int:
    patch = _config(_denoiser(pipe), "patch_size")
    patch = patch[-1] if isinstance(patch, (list, tuple)) else patch
    patch = _int(patch) or 1
    if hasattr(pipe, "_pack_latents"):
        patch *= 2  # Flux-style pipelines pack 2x2 latent patches
    # Stable Diffusion's check_inputs wants multiples of 8 whatever its VAE's factor.
    return math.lcm(8, _spatial_scale(pipe) * patch)


def _default_size(pipe: Any, params: Any) -> tuple[int | None, int | None]:
    """The size the pipeline makes when called without one (its signature's, else sample size x VAE factor)."""
    h, w = (params[k].default if k in params else None for k in ("height", "width"))
    if isinstance(h, int) and isinstance(w, int):
        return w, h
    sample = getattr(pipe, "default_sample_size", None)
    if not isinstance(sample, int):
        sample = _config(_denoiser(pipe), "sample_size")
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    if isinstance(sample, int):
        return sample * _spatial_scale(pipe), sample * _spatial_scale(pipe)
    return None, None


def _audio(pipe: Any, signature_default: float | None) -> dict[str, Any]:
    """Sample rate and length bounds of a text-to-audio pipeline."""
    vocoder = getattr(pipe, "vocoder", None)
    if vocoder is not None:  # AudioLDM, AudioLDM 2, MusicLDM: mel latents decoded by a vocoder
        rate = int(vocoder.config.sampling_rate)
        per_frame = math.prod(vocoder.config.upsample_rates) / rate
        scale = _spatial_scale(pipe)
        sample = _config(_denoiser(pipe), "sample_size")
        default = signature_default or (sample * scale * per_frame if isinstance(sample, int) else None)
        return dict(sample_rate=rate, default_seconds=default, min_seconds=per_frame * scale)
    vae = getattr(pipe, "vae", None)
    rate = _int(getattr(vae, "sampling_rate", None)) or _int(_config(vae, "sampling_rate"))
    hop = _int(getattr(vae, "hop_length", None))
    sample = _config(_denoiser(pipe), "sample_size")
    if rate and hop and isinstance(sample, int):  # Stable Audio: a waveform VAE, a fixed-length latent
        longest = sample * hop / rate
        return dict(sample_rate=rate, default_seconds=signature_default or longest, max_seconds=longest)
    return dict(sample_rate=rate, default_seconds=signature_default)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
