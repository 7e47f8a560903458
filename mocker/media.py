"""The mocker's media models: deterministic pictures, moving pictures and tones, made in timed denoising steps.

Content: a request's values (prompt, seed + i, size, steps, negative prompt, guidance scale) hash to the parameters
of a smooth colourful pattern (per colour channel, a few sinusoid waves across the picture); a video is that
pattern with its waves' phases advancing frame by frame (with an input reference, frame 0 is the reference resized
and later frames drift away from it toward the pattern); audio is an arpeggio over a drone chord whose pitch comes
from the hash of (prompt, seed, voice), whose timbre comes from the voice and whose tempo follows `speed`. The same
request gives the same bytes; another seed gives other bytes.

Timing, like a diffusion model on one GPU: one request generates at a time per instance, the others wait there
(by priority, lower first, then arrival). A denoising step of one 512x512 picture takes --media-step-ms, scaled by
width x height / 512^2, by max(1, frames / 8) and by n (audio: by seconds / 10), divided by --speedup-ratio (0 = no
sleep). A MediaProgress follows every step. Closing the iterator or abort() stops at the next step and hands the
slot to the next waiting request. Rendering and encoding run on a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import (
    MEDIA_KINDS,
    EngineArgs,
    EngineError,
    KvEventSink,
    LoadMetrics,
    MediaLimits,
    ModelCard,
)
from dynamo_mono.kv_events import KvEventBatch
from dynamo_mono.media import encode
from dynamo_mono.media.contract import MediaFile, MediaOutput, MediaProgress, MediaRequest
from mocker.options import MEDIA_KIND_OPTIONS, MOCKER_MEDIA_OPTIONS

_DEFAULTS = {o.name: o.default for o in MOCKER_MEDIA_OPTIONS}
_CATCH_UP_S = 0.003

REFERENCE_PIXELS = 512 * 512  # --media-step-ms is the step time of one picture of this many pixels
FRAMES_PER_UNIT = 8  # a video step costs max(1, frames / 8) picture steps
AUDIO_SECONDS_PER_UNIT = 10.0  # an audio step costs seconds / 10 picture steps
SIZE_MULTIPLE = 8
MAX_IMAGES = 10  # the images API allows n = 1..10
# Video defaults to 512x288: 16:9 like the 832x480 of Wan-class models, and small enough that rendering and
# H.264-encoding a default clip on the CPU stays in the tens of milliseconds.
DEFAULT_SIZES = {"image": (512, 512), "video": (512, 288)}
GUIDANCE_SCALE = 7.5
SAMPLE_RATE = 24000
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
SPEED_RANGE = (0.25, 4.0)
_WAVES = 3  # sinusoids per colour channel
_REFERENCE_FORMATS = ("PNG", "JPEG", "WEBP")


# --- content -----------------------------------------------------------------------------------------------------
def content_key(*parts: Any) -> int:
    """A 64-bit hash of the values that decide an output (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def picture_key(request: MediaRequest, seed: int) -> int:
    """The pattern of one picture (or video) of `request` made with `seed`."""
    guidance = GUIDANCE_SCALE if request.guidance_scale is None else float(request.guidance_scale)
    return content_key(request.prompt, seed, request.width, request.height, request.num_inference_steps,
                       request.negative_prompt or "", guidance)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A smooth colourful picture: per channel, a base level plus a few sinusoid waves across the picture."""

    base: np.ndarray  # (3,) mean level of each channel, in [0, 1]
    freqs: np.ndarray  # (3, waves, 2) cycles per picture along x and y (so a pattern looks alike at any size)
    phases: np.ndarray  # (3, waves) radians
    amps: np.ndarray  # (3, waves)
    drift: np.ndarray  # (3, waves) phase advance per video frame, radians
    shift: tuple[int, int]  # (dy, dx) pixels per frame that a video's input reference moves

    @classmethod
    def from_key(cls, key: int) -> "Pattern":
        rng = np.random.default_rng(key)
        drift = rng.uniform(0.15, 0.45, (3, _WAVES)) * rng.choice((-1.0, 1.0), (3, _WAVES))
        dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
        return cls(base=rng.uniform(0.3, 0.7, 3), freqs=rng.uniform(-2.5, 2.5, (3, _WAVES, 2)),
                   phases=rng.uniform(0.0, 2 * np.pi, (3, _WAVES)), amps=rng.uniform(0.5, 1.0, (3, _WAVES)),
                   drift=drift, shift=(dy, dx or 1))

    def render(self, width: int, height: int, frame: int = 0) -> np.ndarray:
        """(height, width, 3) uint8: the pattern with its phases advanced `frame` frames."""
        x = np.arange(width, dtype=np.float64) * (2 * np.pi / width)
        y = np.arange(height, dtype=np.float64) * (2 * np.pi / height)
        out = np.empty((height, width, 3), dtype=np.uint8)
        acc = np.empty((height, width), dtype=np.float32)
        for c in range(3):
            acc.fill(0.0)
            for k in range(_WAVES):
                fx, fy = self.freqs[c, k]
                a = fx * x + (self.phases[c, k] + self.drift[c, k] * frame)
                b = fy * y
                # sin(a + b) as two outer products: separable, far cheaper than a sine per pixel.
                amp = self.amps[c, k]
                acc += np.outer(np.cos(b) * amp, np.sin(a)).astype(np.float32)
                acc += np.outer(np.sin(b) * amp, np.cos(a)).astype(np.float32)
            level = self.base[c] + acc * np.float32(0.45 / self.amps[c].sum())
            out[:, :, c] = (np.clip(level, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return out


def render_image(request: MediaRequest, seed: int) -> np.ndarray:
    return Pattern.from_key(picture_key(request, seed)).render(request.width, request.height)


def render_video(request: MediaRequest, seed: int, reference: np.ndarray | None) -> list[np.ndarray]:
    """request.num_frames frames; with a reference, frame 0 is the reference and later frames drift from it."""
    pattern = Pattern.from_key(picture_key(request, seed))
    w, h, n = request.width, request.height, request.num_frames
    frames = []
    for t in range(n):
        moving = pattern.render(w, h, t)
        if reference is None:
            frames.append(moving)
        elif t == 0:
            frames.append(reference)
        else:
            dy, dx = pattern.shift
            weight = 0.5 * t / max(1, n - 1)
            rolled = np.roll(reference, (dy * t, dx * t), axis=(0, 1)).astype(np.float32)
            mixed = rolled * (1.0 - weight) + moving.astype(np.float32) * weight
            frames.append((mixed + 0.5).astype(np.uint8))
    return frames


def decode_reference(data: bytes, width: int, height: int) -> np.ndarray:
    """An input reference (PNG / JPEG / WebP bytes) as (height, width, 3) uint8, resized to the request's size."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=_REFERENCE_FORMATS) as im:
            rgb = im.convert("RGB")
    except Exception as exc:  # whatever Pillow raises for bad bytes: the request's fault
        raise EngineError(f"mocker: input_reference is not a PNG, JPEG or WebP image ({type(exc).__name__})",
                          retryable=False) from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8).copy()


def _timbre(voice: str) -> tuple[np.ndarray, float, float]:
    """A voice's harmonic weights (1..6), vibrato rate (Hz) and octave factor: fixed per voice name."""
    rng = np.random.default_rng(content_key("voice", voice))
    tilt = rng.uniform(0.6, 2.2)
    weights = (1.0 / np.arange(1, 7) ** tilt) * rng.uniform(0.3, 1.0, 6)
    weights[0] = 1.0
    return weights, float(rng.uniform(3.0, 7.0)), float(2.0 ** rng.integers(-1, 2))


def render_audio(prompt: str, seed: int, voice: str, seconds: float, speed: float,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples: an arpeggio (notes of 0.3 s / speed) over a quiet drone of the chord's root and fifth."""
    rng = np.random.default_rng(content_key("audio", prompt, seed, voice))
    weights, vibrato_hz, octave = _timbre(voice)
    root = 110.0 * 2.0 ** (int(rng.integers(0, 24)) / 12.0) * octave
    chord = np.array((0, 4, 7, 12) if rng.random() < 0.5 else (0, 3, 7, 12), dtype=np.float64)
    notes = chord[rng.integers(0, len(chord), 8)]
    note_s = 0.3 / speed
    t = np.arange(max(1, round(seconds * sample_rate)), dtype=np.float64) / sample_rate
    position = t / note_s
    freq = root * 2.0 ** (notes[position.astype(np.int64) % len(notes)] / 12.0)
    freq *= 1.0 + 0.006 * np.sin(2 * np.pi * vibrato_hz * t)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    lead = sum(w * np.sin(k * phase) for k, w in enumerate(weights, start=1)) / weights.sum()
    u = position % 1.0
    envelope = np.minimum(1.0, u / 0.08) * (1.0 - 0.7 * u)
    drone = np.sin(2 * np.pi * root * t) + np.sin(2 * np.pi * root * 1.5 * t)
    return (0.35 * lead * envelope + 0.08 * drone).astype(np.float32)


# --- the generator -----------------------------------------------------------------------------------------------
def validate_media_options(opts: dict[str, Any], kind: str) -> tuple[int, int]:
    """ConfigError for values the options' own bounds cannot catch; the default (width, height) of pictures."""
    for name, kinds in MEDIA_KIND_OPTIONS.items():
        if kind not in kinds and opts[name] != _DEFAULTS[name]:
            raise ConfigError(f"--{name.replace('_', '-')}={opts[name]!r} does not apply to the mocker's {kind} "
                              f"models (only to {' and '.join(kinds)} models)")
    if opts["default_num_inference_steps"] > opts["max_num_inference_steps"]:
        raise ConfigError(f"--default-num-inference-steps={opts['default_num_inference_steps']} must be <= "
                          f"--max-num-inference-steps={opts['max_num_inference_steps']}")
    if kind == "audio":
        return 0, 0
    largest = opts["max_image_size"]
    if largest % SIZE_MULTIPLE:
        raise ConfigError(f"--max-image-size={largest} must be a multiple of {SIZE_MULTIPLE}")
    if opts["default_image_size"] is None:
        w, h = (min(v, largest) for v in DEFAULT_SIZES[kind])
    else:
        w, h = _parse_size(opts["default_image_size"])
        if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE or not (0 < w <= largest and 0 < h <= largest):
            raise ConfigError(f"--default-image-size={opts['default_image_size']} must be multiples of "
                              f"{SIZE_MULTIPLE} of at most --max-image-size={largest}")
    if kind == "video":
        for default, most in (("default_num_frames", "max_num_frames"), ("default_fps", "max_fps")):
            if opts[default] > opts[most]:
                raise ConfigError(f"--{default.replace('_', '-')}={opts[default]} must be <= "
                                  f"--{most.replace('_', '-')}={opts[most]}")
    return w, h


def _parse_size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    try:
        if sep:
            return int(w), int(h)
    except ValueError:
        pass
    raise ConfigError(f"--default-image-size={text!r} must be WIDTHxHEIGHT, e.g. 512x512")


def step_seconds(request: MediaRequest, step_ms: float) -> float:
    """Simulated time of one denoising step of `request` (before --speedup-ratio)."""
    if request.kind == "audio":
        units = request.seconds / AUDIO_SECONDS_PER_UNIT
    else:
        frames = request.num_frames if request.kind == "video" else 1
        units = request.width * request.height / REFERENCE_PIXELS * max(1.0, frames / FRAMES_PER_UNIT) * request.n
    return step_ms / 1000.0 * units


@dataclass(eq=False, slots=True)
class _Ticket:
    """A request's place at the instance: waiting for the slot, then holding it."""

    request_id: str
    priority: int
    arrival: int
    turn: asyncio.Future
    aborted: bool = False


class MockerMediaGenerator:
    """A simulated image / video / audio model instance (the MediaGenerator protocol); see the module docstring."""

    def __init__(self, args: EngineArgs) -> None:
        if args.kind not in MEDIA_KINDS:
            raise ConfigError(f"the mocker's media generator makes {', '.join(MEDIA_KINDS)}, not {args.kind!r}")
        opts = dict(_DEFAULTS)
        opts.update({k: v for k, v in (args.options or {}).items() if k in _DEFAULTS and v is not None})
        width, height = validate_media_options(opts, args.kind)
        formats = encode.output_formats(args.kind)
        if not formats:
            raise ConfigError(f"the mocker cannot encode {args.kind} here (Pillow, PyAV with libx264 or soundfile "
                              f"is missing)")
        self.args = args
        self.kind = args.kind
        self.opts = opts
        self.speedup = float(opts["speedup_ratio"])
        self.step_ms = float(opts["media_step_ms"])
        self.limits = self._limits(formats, width, height)
        self._waiting: list[_Ticket] = []
        self._running: _Ticket | None = None
        self._tickets: dict[str, list[_Ticket]] = {}
        self._arrival = 0
        self._stopped = False

    def _limits(self, formats: tuple[str, ...], width: int, height: int) -> MediaLimits:
        o = self.opts
        steps = {"default_steps": o["default_num_inference_steps"], "max_steps": o["max_num_inference_steps"]}
        if self.kind == "audio":
            return MediaLimits(output_formats=formats, max_n=1, sample_rate=SAMPLE_RATE,
                               max_seconds=float(o["max_audio_seconds"]), voices=VOICES, speed=True, **steps)
        pictures = dict(default_width=width, default_height=height, max_width=o["max_image_size"],
                        max_height=o["max_image_size"], size_multiple=SIZE_MULTIPLE,
                        default_guidance_scale=GUIDANCE_SCALE, negative_prompt=True, **steps)
        if self.kind == "image":
            return MediaLimits(output_formats=formats, max_n=MAX_IMAGES, **pictures)
        return MediaLimits(output_formats=formats, max_n=1, default_frames=o["default_num_frames"],
                           max_frames=o["max_num_frames"], default_fps=o["default_fps"], max_fps=o["max_fps"],
                           input_reference=True, **pictures)

    # --- lifecycle / card / metrics ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopped = False
        if self.opts["startup_time"]:
            await asyncio.sleep(float(self.opts["startup_time"]))

    async def stop(self) -> None:
        """Fail every waiting request now and the running one at its next step (retryable: the instance went)."""
        self._stopped = True
        for ticket in list(self._waiting):
            self._wake_waiting(ticket)

    def model_card(self) -> ModelCard:
        return ModelCard(name=self.args.served_model_name, max_model_len=0, block_size=1, kind=self.kind,
                         media=self.limits, max_num_seqs=1, supports_priority=True, priority_higher_is_urgent=False,
                         supports_logprobs=False, kv_events=False)

    def healthy(self) -> bool:
        return not self._stopped

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        """Media instances keep no KV cache: there is nothing to publish."""

    def kv_snapshot(self) -> list[KvEventBatch]:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics(dp_rank=0, running=int(self._running is not None), waiting=len(self._waiting))]

    # --- requests ---------------------------------------------------------------------------------------------
    async def abort(self, request_id: str) -> None:
        """End the request: a waiting one at once, the running one at its next step (EngineError, not retryable)."""
        for ticket in self._tickets.get(request_id, ()):
            ticket.aborted = True
            self._wake_waiting(ticket)

    async def generate_media(self, request: MediaRequest) -> AsyncIterator[MediaProgress | MediaOutput]:
        """A MediaProgress per denoising step, then the MediaOutput (see the module docstring for the timing)."""
        if self._stopped:
            raise EngineError("mocker: instance is down")
        problem = self._problem(request)
        if problem is not None:
            raise EngineError(f"mocker: {problem}", retryable=False)
        reference = None
        if request.input_reference is not None:
            reference = await asyncio.to_thread(decode_reference, request.input_reference, request.width,
                                                request.height)
        seed = request.seed if request.seed is not None else secrets.randbelow(1 << 31)
        ticket = self._enter(request)
        try:
            await ticket.turn
            self._check(ticket)
            total = request.num_inference_steps
            step_s = step_seconds(request, self.step_ms) / self.speedup if self.speedup > 0 else 0.0
            started = deadline = time.perf_counter()
            for step in range(1, total + 1):
                if step_s > 0:
                    # An absolute deadline, as in the engine's step loop: overhead does not stretch simulated time.
                    now = time.perf_counter()
                    if deadline < now - _CATCH_UP_S:
                        deadline = now
                    deadline += step_s
                    await asyncio.sleep(max(0.0, deadline - now))
                else:
                    await asyncio.sleep(0)
                self._check(ticket)
                yield MediaProgress(step, total)
            denoised = time.perf_counter()
            files = await asyncio.to_thread(self._make, request, seed, reference)
            done = time.perf_counter()
            yield MediaOutput(files, seed=seed, inference_time_s=done - started, steps=total,
                              extra={"encode_s": done - denoised})
        finally:
            self._leave(ticket)

    def _problem(self, r: MediaRequest) -> str | None:
        """What is wrong with a request the server should have refused (None: nothing)."""
        lim = self.limits
        if r.kind != self.kind:
            return f"this instance makes {self.kind}, not {r.kind!r}"
        if r.output_format not in lim.output_formats:
            return f"output format {r.output_format!r} is not one of {', '.join(lim.output_formats)}"
        if not 1 <= r.n <= lim.max_n:
            return f"n={r.n} must be between 1 and {lim.max_n}"
        if not 1 <= r.num_inference_steps <= lim.max_steps:
            return f"num_inference_steps={r.num_inference_steps} must be between 1 and {lim.max_steps}"
        if r.dp_rank not in (None, 0):
            return f"dp_rank {r.dp_rank} out of range (data parallel size 1)"
        if r.input_reference is not None and not lim.input_reference:
            return f"a {self.kind} model takes no input_reference"
        if self.kind == "audio":
            if not 0 < r.seconds <= lim.max_seconds:
                return f"seconds={r.seconds} must be > 0 and <= {lim.max_seconds:g}"
            if r.voice is not None and r.voice not in lim.voices:
                return f"voice {r.voice!r} is not one of {', '.join(lim.voices)}"
            if not SPEED_RANGE[0] <= r.speed <= SPEED_RANGE[1]:
                return f"speed={r.speed} must be between {SPEED_RANGE[0]} and {SPEED_RANGE[1]}"
            return None
        if r.voice is not None:
            return f"a {self.kind} model takes no voice"
        m = lim.size_multiple
        if not (0 < r.width <= lim.max_width and 0 < r.height <= lim.max_height) or r.width % m or r.height % m:
            return (f"size {r.width}x{r.height} must be multiples of {m} of at most "
                    f"{lim.max_width}x{lim.max_height}")
        if r.guidance_scale is not None and not math.isfinite(r.guidance_scale):
            return f"guidance_scale={r.guidance_scale} must be a finite number"
        if self.kind == "video":
            if not 1 <= r.num_frames <= lim.max_frames:
                return f"num_frames={r.num_frames} must be between 1 and {lim.max_frames}"
            if not 1 <= r.fps <= lim.max_fps:
                return f"fps={r.fps} must be between 1 and {lim.max_fps}"
        return None

    def _make(self, request: MediaRequest, seed: int, reference: np.ndarray | None) -> list[MediaFile]:
        """Render and encode every output (on a worker thread)."""
        fmt = request.output_format
        try:
            if self.kind == "image":
                return [encode.encode_image(render_image(request, seed + i), fmt) for i in range(request.n)]
            if self.kind == "video":
                return [encode.encode_video(render_video(request, seed, reference), request.fps, fmt)]
            samples = render_audio(request.prompt, seed, request.voice or VOICES[0], request.seconds, request.speed)
            return [encode.encode_audio(samples, SAMPLE_RATE, fmt)]
        except encode.EncodeError as exc:
            raise EngineError(f"mocker: {exc}", retryable=False) from None

    # --- the one slot ---------------------------------------------------------------------------------------------
    def _enter(self, request: MediaRequest) -> _Ticket:
        self._arrival += 1
        ticket = _Ticket(request.request_id, request.priority, self._arrival,
                         asyncio.get_running_loop().create_future())
        self._waiting.append(ticket)
        self._tickets.setdefault(ticket.request_id, []).append(ticket)
        self._dispatch()
        return ticket

    def _dispatch(self) -> None:
        """Hand the free slot to the most urgent waiting request (lower priority value first, then arrival)."""
        if self._running is not None or not self._waiting or self._stopped:
            return
        ticket = min(self._waiting, key=lambda t: (t.priority, t.arrival))
        self._waiting.remove(ticket)
        self._running = ticket
        if not ticket.turn.done():
            ticket.turn.set_result(None)

    def _wake_waiting(self, ticket: _Ticket) -> None:
        """A waiting request leaves the queue now (aborted, or the instance stopped); its generator raises."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            if not ticket.turn.done():  # done: the waiting task was cancelled and is leaving anyway
                ticket.turn.set_result(None)

    def _check(self, ticket: _Ticket) -> None:
        if self._stopped:
            raise EngineError("mocker: engine stopped")
        if ticket.aborted:
            raise EngineError("mocker: request aborted", retryable=False)

    def _leave(self, ticket: _Ticket) -> None:
        if self._running is ticket:
            self._running = None
        else:
            try:
                self._waiting.remove(ticket)
            except ValueError:
                pass
        same = self._tickets.get(ticket.request_id)
        if same is not None:
            same.remove(ticket)
            if not same:
                del self._tickets[ticket.request_id]
        self._dispatch()


def create_media_generator(args: EngineArgs) -> MockerMediaGenerator:
    """Modality factory registered as "mocker" for image, video and audio models."""
    return MockerMediaGenerator(args)
