"""Media requests, API-neutral: what a client asked, checked against the model's limits, run on the pool.

Every value a generator would get is resolved here from the request and the instances' card (`ModelCard.media`):
defaults filled, limits enforced with a 400 that names the field and the limit, and fields the generator cannot
act on refused (never passed on to be ignored).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from dynamo_mono.engine import MediaLimits
from dynamo_mono.media.contract import MediaOutput, MediaRequest
from dynamo_mono.serving.admission import pass_queue
from dynamo_mono.serving.chat import admission_queues
from dynamo_mono.serving.errors import InvalidRequest, NoInstance
from dynamo_mono.serving.model import ServedModel

# Largest seed accepted (Dynamo's nvext.seed is a u32 for images and an i64 for video; torch generators take
# 64-bit seeds; output i uses seed + i, so keep room below 2**63).
MAX_SEED = 2 ** 63 - 1 - 16
# Speech length when the generator's duration follows the text: words per second of ordinary speech.
WORDS_PER_SECOND = 2.5
MIN_SPEECH_SECONDS = 0.5


@dataclass(slots=True)
class MediaParams:
    """What a client asked of one media request, before the model's defaults (None = not given)."""

    kind: str  # image | video | audio
    prompt: str
    output_format: str | None = None
    n: int = 1
    size: str | None = None  # "WxH" or "auto"
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    seconds: float | None = None  # video / audio duration
    fps: int | None = None
    num_frames: int | None = None
    input_reference: bytes | None = None
    voice: str | None = None
    speed: float | None = None
    priority: int = 0


def media_limits(model: ServedModel) -> MediaLimits:
    """The limits of the model's instances (they agree); NoInstance (503) when it has none yet."""
    card = model.pool.card()
    if card is None or card.media is None:
        raise NoInstance(f"no ready instance of model '{model.name}'")
    return card.media


def resolve_media_request(model: ServedModel, p: MediaParams, rid: str, *, max_prompt_chars: int) -> MediaRequest:
    """The MediaRequest a generator gets: every field resolved and inside the model's limits (InvalidRequest)."""
    lim = media_limits(model)
    prompt_field = "input" if p.kind == "audio" else "prompt"
    if not p.prompt.strip():
        raise InvalidRequest(f"'{prompt_field}' must not be empty", param=prompt_field)
    if len(p.prompt) > max_prompt_chars:
        raise InvalidRequest(f"'{prompt_field}' has {len(p.prompt)} characters, more than the server limit of "
                             f"{max_prompt_chars}", param=prompt_field)
    fmt = p.output_format or lim.output_formats[0]
    if fmt not in lim.output_formats:
        param = "output_format" if p.kind == "image" else "response_format"
        raise InvalidRequest(f"model '{model.name}' cannot encode {p.kind} as {fmt!r}; it encodes: "
                             f"{', '.join(lim.output_formats)}", param=param)
    if p.n > lim.max_n:
        raise InvalidRequest(f"n={p.n} is more than model '{model.name}' makes per request ({lim.max_n})", param="n")
    req = MediaRequest(request_id=rid, kind=p.kind, prompt=p.prompt, output_format=fmt, n=p.n, model=model.name,
                       priority=p.priority)
    req.seed = _seed(p.seed)
    if p.kind in ("image", "video"):
        req.width, req.height = _size(model, lim, p.size)
    _denoising(model, lim, p, req)
    if p.kind == "video":
        _video(model, lim, p, req)
    elif p.input_reference is not None:
        raise InvalidRequest("'input_reference' applies to video models only", param="input_reference")
    if p.kind == "audio":
        _audio(model, lim, p, req)
    else:
        for name in ("voice", "speed"):
            if getattr(p, name) is not None:
                raise InvalidRequest(f"'{name}' applies to speech (audio) models only", param=name)
        if p.seconds is not None and p.kind == "image":
            raise InvalidRequest("'seconds' applies to video and audio models only", param="seconds")
    return req


def _seed(seed: int | None) -> int | None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidRequest(f"seed must be between 0 and {MAX_SEED}", param="nvext.seed")
    return seed


def _size(model: ServedModel, lim: MediaLimits, size: str | None) -> tuple[int, int]:
    if size is None or size == "auto":
        return lim.default_width, lim.default_height
    w_s, sep, h_s = size.lower().partition("x")
    if not sep or not w_s.isdigit() or not h_s.isdigit():
        raise InvalidRequest(f"size must be 'WIDTHxHEIGHT' (e.g. '512x512') or 'auto', not {size!r}", param="size")
    w, h = int(w_s), int(h_s)
    if not (0 < w <= lim.max_width and 0 < h <= lim.max_height):
        raise InvalidRequest(f"size {size} is outside the limits of model '{model.name}' (at most "
                             f"{lim.max_width}x{lim.max_height})", param="size")
    m = lim.size_multiple
    if m > 1 and (w % m or h % m):
        raise InvalidRequest(f"size {size}: width and height must be multiples of {m} for model '{model.name}'",
                             param="size")
    return w, h


def _denoising(model: ServedModel, lim: MediaLimits, p: MediaParams, req: MediaRequest) -> None:
    steps = p.num_inference_steps
    if lim.max_steps == 0:
        if steps is not None:
            raise InvalidRequest(f"model '{model.name}' has no denoising steps to set", param="nvext.num_inference_steps")
    elif steps is None:
        req.num_inference_steps = lim.default_steps
    elif not 1 <= steps <= lim.max_steps:
        raise InvalidRequest(f"num_inference_steps={steps} is outside 1..{lim.max_steps}, the limit of model "
                             f"'{model.name}'", param="nvext.num_inference_steps")
    else:
        req.num_inference_steps = steps
    if p.guidance_scale is not None:
        if lim.default_guidance_scale is None:
            raise InvalidRequest(f"model '{model.name}' takes no guidance_scale", param="nvext.guidance_scale")
        if not (math.isfinite(p.guidance_scale) and p.guidance_scale >= 0):
            raise InvalidRequest("guidance_scale must be a finite number >= 0", param="nvext.guidance_scale")
        req.guidance_scale = p.guidance_scale
    else:
        req.guidance_scale = lim.default_guidance_scale
    if p.negative_prompt is not None:
        if not lim.negative_prompt:
            raise InvalidRequest(f"model '{model.name}' takes no negative_prompt", param="nvext.negative_prompt")
        if req.guidance_scale is not None and req.guidance_scale <= 1.0:
            raise InvalidRequest("negative_prompt acts through classifier-free guidance: it needs guidance_scale > 1",
                                 param="nvext.negative_prompt")
        req.negative_prompt = p.negative_prompt


def _video(model: ServedModel, lim: MediaLimits, p: MediaParams, req: MediaRequest) -> None:
    fps = lim.default_fps if p.fps is None else p.fps
    if not 1 <= fps <= lim.max_fps:
        raise InvalidRequest(f"fps={fps} is outside 1..{lim.max_fps}, the limit of model '{model.name}'",
                             param="nvext.fps")
    if p.num_frames is not None:
        frames = p.num_frames
        param = "nvext.num_frames"
    elif p.seconds is not None:  # Dynamo's rule: num_frames = fps x seconds (to the nearest count the model makes)
        if not (math.isfinite(p.seconds) and p.seconds > 0):
            raise InvalidRequest("seconds must be a number > 0", param="seconds")
        k = lim.frames_step
        frames = max(1, round((fps * p.seconds - 1) / k) * k + 1) if k > 1 else max(1, round(fps * p.seconds))
        param = "seconds"
    else:
        frames, param = lim.default_frames, "nvext.num_frames"
    if not 1 <= frames <= lim.max_frames:
        raise InvalidRequest(f"{frames} frames is outside 1..{lim.max_frames}, the limit of model '{model.name}' "
                             f"({'fps x seconds' if param == 'seconds' else 'num_frames'})", param=param)
    if lim.frames_step > 1 and (frames - 1) % lim.frames_step:
        k = lim.frames_step
        raise InvalidRequest(f"model '{model.name}' makes {k}k+1 frames (e.g. {(frames - 1) // k * k + 1}), not "
                             f"{frames}", param=param)
    req.fps, req.num_frames = fps, frames
    if p.input_reference is None and lim.input_reference_required:
        raise InvalidRequest(f"model '{model.name}' makes video from an image: input_reference is required",
                             param="input_reference")
    if p.input_reference is not None:
        if not lim.input_reference:
            raise InvalidRequest(f"model '{model.name}' does not start from an input_reference image (it is not an "
                                 "image-to-video model)", param="input_reference")
        req.input_reference = p.input_reference


def _audio(model: ServedModel, lim: MediaLimits, p: MediaParams, req: MediaRequest) -> None:
    if p.voice is not None and p.voice not in lim.voices:
        raise InvalidRequest(f"voice {p.voice!r} is not a voice of model '{model.name}'; voices: "
                             f"{', '.join(lim.voices) or 'none'}", param="voice")
    req.voice = p.voice if p.voice is not None else (lim.voices[0] if lim.voices else None)
    speed = 1.0 if p.speed is None else p.speed
    if not (math.isfinite(speed) and 0.25 <= speed <= 4.0):
        raise InvalidRequest("speed must be between 0.25 and 4.0", param="speed")
    if speed != 1.0 and not lim.speed:
        raise InvalidRequest(f"model '{model.name}' cannot change the speed of its audio", param="speed")
    req.speed = speed
    if p.seconds is not None:
        seconds = p.seconds
        if not (math.isfinite(seconds) and max(lim.min_seconds, 0) <= seconds <= lim.max_seconds and seconds > 0):
            raise InvalidRequest(f"seconds={seconds} is outside [{lim.min_seconds:g}, {lim.max_seconds:g}], the limit "
                                 f"of model '{model.name}'", param="nvext.seconds")
    elif lim.default_seconds:
        seconds = lim.default_seconds
    else:  # follow the text: ordinary speech rate, faster with speed
        seconds = max(MIN_SPEECH_SECONDS, lim.min_seconds, len(p.prompt.split()) / WORDS_PER_SECOND / speed)
        if seconds > lim.max_seconds:
            raise InvalidRequest(f"the input would take about {seconds:.0f} s to speak, more than the "
                                 f"{lim.max_seconds:g} s model '{model.name}' makes; shorten it", param="input")
    req.seconds = seconds


async def media_job(state: Any, model: ServedModel, params: MediaParams, rid: str) -> "MediaJob":
    """The request resolved against the model's limits (400 on a bad field), ready for admission."""
    req = resolve_media_request(model, params, rid, max_prompt_chars=state.settings.max_media_prompt_chars)
    return MediaJob(model.pool, req, metrics=state.metrics, model=model.name, admission=admission_queues(state, model))


class MediaJob:
    """One media API request on the pool, under admission: progress counted, the output returned."""

    def __init__(self, pool: Any, request: MediaRequest, *, metrics: Any = None, model: str = "",
                 admission: tuple = ()) -> None:
        self.pool = pool
        self.request = request
        self.metrics = metrics
        self.model = model
        self.admission = admission
        self._held: list = []
        self._observed = False
        self.started = time.perf_counter()
        self.steps_done = 0

    async def admit(self) -> None:
        """Routing preconditions (a ready instance, a valid pin) and the admission queues, before any work."""
        self.pool.preflight(self.request)
        gauge = self.metrics.model(self.model).queued if self.metrics is not None else None
        for queue in self.admission:
            await pass_queue(queue, self.request.priority, None, gauge)
            self._held.append(queue)

    async def run(self) -> MediaOutput:
        """Drive the generator to its output; each denoising step counts on dynamo_frontend_media_steps_total."""
        steps = self.metrics.media_steps.labels(self.model) if self.metrics is not None else None
        it = self.pool.generate_media(self.request)
        try:
            async for item in it:
                if type(item) is MediaOutput:
                    return item
                self.steps_done += 1
                if steps is not None:
                    steps.inc()
        finally:
            await it.aclose()
        raise RuntimeError("media generation ended without an output")  # pool.generate_media always yields one

    def finish(self) -> None:
        """Release admission slots and record metrics; idempotent."""
        while self._held:
            self._held.pop().release()
        if not self._observed:
            self._observed = True
            if self.metrics is not None:
                self.metrics.model(self.model).duration.observe(time.perf_counter() - self.started)
