"""The card's MediaLimits of a diffusers instance: the pipeline's own defaults and abilities within the options."""

from __future__ import annotations

from dynamo_mono.api import ConfigError, MediaLimits, output_formats

from dynamo_mono_diffusers.options import DiffusersSettings
from dynamo_mono_diffusers.traits import PipelineTraits

FALLBACK_SIZE = 512  # a pipeline that names no default size (rare)
FALLBACK_STEPS = 50
FALLBACK_FRAMES = 16
FALLBACK_FPS = 16  # Wan's rate; vLLM-omni's default too
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what encode_audio's opus accepts
_MISSING = {"image": "Pillow", "video": "PyAV with libx264", "audio": "soundfile"}


def media_limits(traits: PipelineTraits, settings: DiffusersSettings, kind: str) -> MediaLimits:
    """What the instance can make; ConfigError when an option does not fit the pipeline."""
    formats = output_formats(kind)
    if kind == "audio" and traits.sample_rate not in _OPUS_RATES:
        formats = tuple(f for f in formats if f != "opus")
    if not formats:
        raise ConfigError(f"this installation cannot encode {kind} ({_MISSING[kind]} is missing)")
    limits = MediaLimits(output_formats=formats, max_n=settings.max_num_outputs, negative_prompt=traits.negative_prompt)
    name = traits.class_name
    if traits.steps:
        limits.max_steps = settings.max_num_inference_steps
        limits.default_steps = settings.default_num_inference_steps or min(traits.default_steps or FALLBACK_STEPS,
                                                                           limits.max_steps)
    elif settings.default_num_inference_steps is not None:
        raise ConfigError(f"--default-num-inference-steps: {name} takes no number of steps")
    if traits.guidance:
        limits.default_guidance_scale = settings.default_guidance_scale
        if limits.default_guidance_scale is None:
            limits.default_guidance_scale = traits.default_guidance if traits.default_guidance is not None else 1.0
    elif settings.default_guidance_scale is not None:
        raise ConfigError(f"--default-guidance-scale: {name} has no guidance scale that changes its output")
    if kind == "audio":
        _audio_limits(limits, traits, settings)
    else:
        _size_limits(limits, traits, settings)
        if kind == "video":
            _video_limits(limits, traits, settings)
    return limits


def _size_limits(limits: MediaLimits, traits: PipelineTraits, settings: DiffusersSettings) -> None:
    m = limits.size_multiple = traits.size_multiple
    top = settings.max_image_size // m * m
    if top < m:
        raise ConfigError(f"--max-image-size={settings.max_image_size} is below the {m}-pixel step of "
                          f"{traits.class_name}'s sizes")
    limits.max_width = limits.max_height = top
    if settings.default_width is not None and settings.default_height is not None:
        if settings.default_width % m or settings.default_height % m:
            raise ConfigError(f"--default-image-size={settings.default_image_size}: {traits.class_name} makes sizes "
                              f"that are multiples of {m}")
        limits.default_width, limits.default_height = settings.default_width, settings.default_height
        return
    w, h = traits.default_width or FALLBACK_SIZE, traits.default_height or FALLBACK_SIZE
    scale = min(1.0, top / max(w, h))  # keep the pipeline's aspect ratio within --max-image-size
    limits.default_width = max(m, int(w * scale) // m * m)
    limits.default_height = max(m, int(h * scale) // m * m)


def _video_limits(limits: MediaLimits, traits: PipelineTraits, settings: DiffusersSettings) -> None:
    t = traits.frames_multiple
    limits.default_frames = settings.default_num_frames or traits.default_frames or FALLBACK_FRAMES
    if t > 1 and limits.default_frames % t != 1:
        raise ConfigError(f"--default-num-frames={limits.default_frames}: {traits.class_name} makes {t}k+1 frames")
    limits.max_frames = settings.max_num_frames or limits.default_frames
    if limits.default_frames > limits.max_frames:
        raise ConfigError(f"{traits.class_name} makes {limits.default_frames} frames by default, above "
                          f"--max-num-frames={limits.max_frames}: set --default-num-frames too")
    limits.default_fps = settings.default_fps or traits.default_fps or FALLBACK_FPS
    limits.max_fps = settings.max_fps
    if limits.default_fps > limits.max_fps:
        raise ConfigError(f"{traits.class_name}'s default of {limits.default_fps} fps is above "
                          f"--max-fps={limits.max_fps}: set --default-fps too")
    limits.input_reference = traits.image_param is not None
    limits.input_reference_required = traits.image_required
    limits.frames_step = max(1, t)


def _audio_limits(limits: MediaLimits, traits: PipelineTraits, settings: DiffusersSettings) -> None:
    if not traits.sample_rate:
        raise ConfigError(f"cannot tell the sample rate of {traits.class_name}'s audio")
    limits.sample_rate = traits.sample_rate
    limits.min_seconds = traits.min_seconds
    limits.max_seconds = settings.max_audio_seconds
    if traits.max_seconds is not None and limits.max_seconds > traits.max_seconds:
        if settings.max_audio_seconds_set:
            raise ConfigError(f"--max-audio-seconds={settings.max_audio_seconds}: {traits.class_name} makes at "
                              f"most {traits.max_seconds:g} s")
        limits.max_seconds = traits.max_seconds
    default = settings.default_audio_seconds or traits.default_seconds
    if default is None:
        raise ConfigError(f"{traits.class_name} has no default audio length: set --default-audio-seconds")
    if default > limits.max_seconds:
        if settings.default_audio_seconds is not None:
            raise ConfigError(f"--default-audio-seconds={default:g} is above the longest audio, "
                              f"{limits.max_seconds:g} s")
        default = limits.max_seconds
    limits.default_seconds = default
    # A text-to-audio pipeline has one "voice" and no speed knob: the server refuses any other value.
    limits.voices = ("default",)
    limits.speed = False
