"""One media request on the instance's worker thread: the pipeline call(s), step progress, cancellation, encoding."""

from __future__ import annotations

import io
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from dynamo_mono.api import (
    EncodeError,
    EngineError,
    InvalidRequest,
    MediaFile,
    MediaLimits,
    MediaOutput,
    MediaProgress,
    MediaRequest,
    encode_audio,
    encode_image,
    encode_video,
)

from dynamo_mono_diffusers.traits import PipelineTraits

log = logging.getLogger("dynamo_mono.diffusers")

PROGRESS_LOG_INTERVAL_S = 10.0  # a long job logs its progress this often (never per step at info level)
_SEED_MASK = (1 << 64) - 1  # torch.Generator.manual_seed takes unsigned 64-bit seeds
# Messages of errors after which the CUDA context is unusable (every later call would fail too).
_DEVICE_FAULTS = ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "device-side assert", "NCCL error")


class JobCancelled(Exception):
    """The request was closed or aborted: the pipeline stopped at a step boundary."""


class DeviceFault(EngineError):
    """The device failed in a way that breaks every later request: the instance turns unhealthy."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@dataclass(slots=True)
class Job:
    """A request with everything its worker-thread run needs; `cancel` is set from the event loop."""

    request: MediaRequest
    seed: int
    kwargs: dict[str, Any]  # pipeline keywords shared by every output (prompt, sizes, steps, ...)
    fps: int = 0  # video: the container's frame rate
    report: Callable[[MediaProgress], None] = lambda progress: None  # thread-safe hand-off to the event loop
    cancel: threading.Event = field(default_factory=threading.Event)
    aborted: bool = False


def call_kwargs(traits: PipelineTraits, limits: MediaLimits, req: MediaRequest) -> tuple[dict[str, Any], int]:
    """The pipeline keywords of a request (defaults for unset values) and the video fps; InvalidRequest for a
    value this pipeline cannot act on (the server checks the card's limits; these are the pipeline's own rules)."""
    kw: dict[str, Any] = {"prompt": req.prompt, "output_type": "np"}
    if traits.steps:
        kw["num_inference_steps"] = req.num_inference_steps or limits.default_steps
    guidance = req.guidance_scale if req.guidance_scale is not None else limits.default_guidance_scale
    if traits.guidance:
        kw["guidance_scale"] = guidance
    if req.negative_prompt is not None:
        if not traits.negative_prompt:
            raise InvalidRequest(f"{traits.class_name} takes no negative_prompt", param="nvext.negative_prompt")
        if guidance is None or guidance <= 1.0:
            raise InvalidRequest("negative_prompt acts through classifier-free guidance: it needs guidance_scale > 1",
                                 param="nvext.negative_prompt")
        kw["negative_prompt"] = req.negative_prompt
    fps = 0
    if req.kind in ("image", "video"):
        kw["width"] = req.width or limits.default_width
        kw["height"] = req.height or limits.default_height
    if req.kind == "video":
        frames = req.num_frames or limits.default_frames
        t = traits.frames_multiple
        if t > 1 and frames % t != 1:
            raise InvalidRequest(f"{traits.class_name} makes {t}k+1 frames (e.g. {frames // t * t + 1}), not {frames}",
                                 param="nvext.num_frames")
        kw[traits.frames_param] = frames
        fps = req.fps or limits.default_fps
        if traits.fps_param:
            kw[traits.fps_param] = fps
        if traits.image_required and req.input_reference is None:
            raise InvalidRequest(f"{traits.class_name} makes video from an image: input_reference is required",
                                 param="input_reference")
    if req.input_reference is not None and not traits.image_param:
        raise InvalidRequest(f"{traits.class_name} takes no input_reference", param="input_reference")
    if req.kind == "audio":
        seconds = req.seconds or limits.default_seconds
        if seconds < traits.min_seconds:
            raise InvalidRequest(f"{traits.class_name} makes audio of at least {traits.min_seconds:g} s",
                                 param="nvext.seconds")
        kw[traits.seconds_param] = seconds
    return kw, fps


def run_job(pipe: Any, traits: PipelineTraits, limits: MediaLimits, job: Job) -> MediaOutput:
    """Make and encode the request's n outputs (output i from seed + i); raises JobCancelled, InvalidRequest or
    EngineError. Runs on the worker thread."""
    failure: BaseException | None = None
    try:
        return _run(pipe, traits, limits, job)
    except (JobCancelled, InvalidRequest, EngineError) as exc:
        failure = exc.with_traceback(None)
    except EncodeError as exc:
        failure = EngineError(f"encoding the {job.request.kind} failed: {exc}", retryable=False)
    except Exception as exc:  # noqa: BLE001 - every pipeline failure becomes an EngineError
        failure = classify_failure(traits.class_name, exc)
    # Outside the except blocks: the failed call's frames (and the tensors they hold) are gone now.
    _free_device_memory(pipe)
    raise failure


def _run(pipe: Any, traits: PipelineTraits, limits: MediaLimits, job: Job) -> MediaOutput:
    import torch

    req = job.request
    start = time.perf_counter()
    kwargs = dict(job.kwargs)
    if req.input_reference is not None:
        kwargs[traits.image_param] = _decode_image(req.input_reference)
    generators = [torch.Generator("cpu").manual_seed((job.seed + i) & _SEED_MASK) for i in range(req.n)]
    # One call makes all n where the pipeline batches them; else one call per output.
    batches = [generators] if traits.batch_param and req.n > 1 else [[g] for g in generators]
    outputs: list[Any] = []
    for batch in batches:
        _check(job)
        call = dict(kwargs, generator=batch if len(batch) > 1 else batch[0])
        if traits.batch_param:
            call[traits.batch_param] = len(batch)
        _add_step_callback(call, pipe, traits, job, start)
        outputs.extend(_items(pipe(**call), req.kind))
    pipeline_s = time.perf_counter() - start
    _check(job)
    files = [_encode(item, req, limits, job.fps) for item in outputs[:req.n]]
    done = time.perf_counter()
    return MediaOutput(files=files, seed=job.seed, inference_time_s=done - start,
                       steps=kwargs.get("num_inference_steps", 0),
                       extra={"pipeline_s": pipeline_s, "encode_s": done - start - pipeline_s})


def _check(job: Job) -> None:
    if job.cancel.is_set():
        raise JobCancelled(job.request.request_id)


def _add_step_callback(call: dict[str, Any], pipe: Any, traits: PipelineTraits, job: Job, start: float) -> None:
    """Progress per denoising step and the cancellation check, through whichever callback the pipeline takes."""
    steps = call.get("num_inference_steps", 0)
    last_log = [start]

    def step_done(step: int, total: int) -> None:
        _check(job)  # raising here unwinds the pipeline call at this step boundary
        job.report(MediaProgress(min(step, total), total))
        now = time.perf_counter()
        if now - last_log[0] >= PROGRESS_LOG_INTERVAL_S:
            last_log[0] = now
            log.info("request %s: step %d/%d after %.1f s", job.request.request_id, step, total, now - start)

    if traits.step_callback == "callback_on_step_end":
        def on_step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            step_done(index + 1, getattr(pipe, "_num_timesteps", None) or steps)
            return tensors

        call["callback_on_step_end"] = on_step_end
    elif traits.step_callback == "callback":
        call["callback"] = lambda index, _timestep, _latents: step_done(index + 1, steps)
        call["callback_steps"] = 1


def _items(out: Any, kind: str) -> list[Any]:
    """The per-output arrays of a pipeline result: images (H, W, 3), videos (F, H, W, 3), audio (S,) or (C, S)."""
    items = {"image": getattr(out, "images", None), "video": getattr(out, "frames", None),
             "audio": getattr(out, "audios", None)}[kind]
    if items is None:
        raise EngineError(f"the pipeline returned no {kind} output ({type(out).__name__})", retryable=False)
    if hasattr(items, "detach"):  # a torch tensor (e.g. Stable Audio's default "pt" output)
        items = items.detach().float().cpu().numpy()
    return list(items)


def _encode(item: Any, req: MediaRequest, limits: MediaLimits, fps: int) -> MediaFile:
    if req.kind == "image":
        return encode_image(item, req.output_format)
    if req.kind == "video":
        return encode_video(item, fps, req.output_format)
    samples = np.asarray(item, dtype=np.float32)
    if samples.ndim == 2 and samples.shape[0] < samples.shape[1]:
        samples = samples.T  # (channels, samples) -> (samples, channels)
    return encode_audio(samples, limits.sample_rate, req.output_format)


def _decode_image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidRequest(f"input_reference is not an image this server can read ({exc})",
                             param="input_reference") from None


def classify_failure(class_name: str, exc: Exception) -> EngineError:
    """The EngineError of a failed pipeline call. Out of memory: not retryable (the request's size is the cause; the same model on another instance of the
    same hardware fails the same way, and the retry would only take memory from that one's requests). A device
    fault: retryable on another instance, and this one turns unhealthy. Anything else: the pipeline refused these
    inputs, which another instance would refuse too."""
    import torch

    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in message or "can't allocate memory" in message:
        return EngineError(f"{class_name} ran out of memory: ask for fewer or smaller outputs ({message})",
                           retryable=False)
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if isinstance(exc, accelerator_error) or any(s in message for s in _DEVICE_FAULTS):
        return DeviceFault(f"{class_name} failed on its device: {message}")
    return EngineError(f"{class_name} failed: {type(exc).__name__}: {message}", retryable=False)


def _free_device_memory(pipe: Any) -> None:
    import torch

    device = getattr(pipe, "device", None)
    if getattr(device, "type", "") == "cuda":
        torch.cuda.empty_cache()
