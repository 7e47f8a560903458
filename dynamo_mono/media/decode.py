"""Decoding client media (images, video, audio) into arrays under operator limits (sync: run it in a thread).

Identity. Each result carries `uuid`, the SHA-256 of the *encoded bytes* as 64 hex digits (mixed with the
decode options where they change the result: a video's fps and frame cap), and `content_hash`, its first
16 hex digits as an unsigned 64-bit integer, which is what goes into block hashes (`MediaSpan`). It is the
shape of Dynamo's vLLM path (vLLM takes a 64-hex `multi_modal_uuids` entry; Dynamo's KV publisher keeps
the first 16 hex digits as the u64 `mm_hash`). Encoded bytes rather than decoded pixels (vLLM and
TRT-LLM hash pixels) because the hash is the cache key: it must be known *before* decoding for a hit to
skip the decode, and bytes are 10-50x smaller than pixels. The cost is that two encodings of the same
pixels never share cache or KV entries: a missed hit, never a false one. SHA-256 rather than xxh3
because decoded media are shared across requests and users through the cache (and the uuid reaches
engine caches): xxh3 is not built to resist crafted collisions, so one client could make its image
answer for another's; SHA-256 runs at about 1 GB/s, well under the cost of decoding.

Safety. Images: Pillow opens only the accepted formats (not EPS, which runs Ghostscript) and the pixel
count is checked from the header before any pixel is decoded (decompression bombs). Video: the container
is sniffed and opened with its demuxer named (FFmpeg's probing would also accept playlist formats that
open other URLs or files), frame size and duration are checked from the header and again per frame.
Results are read-only arrays: the cache hands the same array to every request that hits it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dynamo_mono.serving.errors import InvalidRequest

# Decoding work a lying header cannot inflate: decoded frames are bounded by duration x this rate.
_MAX_SOURCE_FPS = 240


class MediaDecodeError(InvalidRequest, ValueError):
    """The client's media (or its decode options) cannot be used: corrupt, unsupported, or over a limit."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Operator limits on decoding; a request's media_io_kwargs choose within them, never past them."""

    max_image_pixels: int = 4096 * 4096  # Pillow itself refuses above 2 x PIL.Image.MAX_IMAGE_PIXELS (~179 M)
    # Pillow format ids (JPEG includes multi-picture JPEGs from phone cameras). Never EPS: it runs Ghostscript.
    image_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
    video_fps: float = 2.0  # frames sampled per second of video, unless the request asks fewer
    video_max_fps: float = 30.0  # the most a request may ask
    video_max_frames: int = 32  # frames per video at most (the sampling rate drops to cover the whole video)
    max_video_frame_pixels: int = 1920 * 1080
    max_video_duration_s: float = 600.0
    max_audio_duration_s: float = 600.0
    max_audio_sample_rate: int = 192_000
    max_audio_channels: int = 8

    def __post_init__(self) -> None:
        for name in ("max_image_pixels", "video_max_frames", "max_video_frame_pixels", "max_audio_sample_rate",
                     "max_audio_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        for name in ("video_fps", "video_max_fps", "max_video_duration_s", "max_audio_duration_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)}")
        if self.video_fps > self.video_max_fps:
            raise ValueError(f"video_fps ({self.video_fps}) must not exceed video_max_fps ({self.video_max_fps})")
        if not self.image_formats:
            raise ValueError("image_formats must name at least one format")
        Image = _pil()
        Image.init()
        unknown = [f for f in self.image_formats if f not in Image.OPEN]
        if unknown:
            raise ValueError(f"image_formats: Pillow cannot open {', '.join(unknown)} here; it opens "
                             f"{', '.join(sorted(Image.OPEN))}")


@dataclass(frozen=True, slots=True)
class VideoOptions:
    """How one video is sampled: at `fps` frames per second, at most `max_frames` frames."""

    fps: float
    max_frames: int


@dataclass(frozen=True, slots=True)
class MediaIoOptions:
    """A request's decoder options (Dynamo's `media_io_kwargs`), resolved within the operator's limits."""

    video: VideoOptions


@dataclass(frozen=True, slots=True)
class DecodedImage:
    array: np.ndarray  # (height, width, 3) uint8 RGB, read-only
    width: int
    height: int
    content_hash: int
    uuid: str

    @property
    def nbytes(self) -> int:
        return self.array.nbytes


@dataclass(frozen=True, slots=True)
class DecodedVideo:
    frames: np.ndarray  # (frames, height, width, 3) uint8 RGB, read-only
    fps: float  # the sampling rate used: frames / duration_s (frames are about 1 / fps seconds apart)
    duration_s: float  # of the whole source video
    content_hash: int
    uuid: str

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    samples: np.ndarray  # (samples,) float32 mono in [-1, 1], read-only
    sample_rate: int  # the source's rate (no resampling)
    content_hash: int
    uuid: str

    @property
    def nbytes(self) -> int:
        return self.samples.nbytes

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def content_digest(data: bytes) -> bytes:
    """SHA-256 of encoded media bytes: the decode-cache key and the root of a result's uuid and content_hash."""
    return hashlib.sha256(data).digest()


def media_identity(digest: bytes, params: str = "") -> tuple[str, int]:
    """(uuid, content_hash) of media with this content digest decoded with these params ("" when none apply)."""
    if params:
        digest = hashlib.sha256(digest + params.encode()).digest()
    uuid = digest.hex()
    return uuid, int(uuid[:16], 16)


def video_params(opts: VideoOptions) -> str:
    """The canonical text of a video's decode options, as mixed into its identity."""
    return f"fps={opts.fps!r};max_frames={opts.max_frames}"


# ----------------------------------------------------------------------------------------------- options


def media_io_options(kwargs: Mapping[str, Any] | None, limits: DecodeLimits) -> MediaIoOptions:
    """Resolve a request's `media_io_kwargs` ({"video": {"fps": 1.0, "max_frames": 16}}) within the limits;
    unknown keys and values over a limit are refused (MediaDecodeError, param "media_io_kwargs")."""
    if kwargs is None:
        return MediaIoOptions(video_options(None, limits))
    if not isinstance(kwargs, Mapping):
        raise _option_error("media_io_kwargs must be an object")
    unknown = sorted(set(kwargs) - {"video"})
    if unknown:
        raise _option_error(f"media_io_kwargs: unknown key {unknown[0]!r}; accepted: video")
    return MediaIoOptions(video_options(kwargs.get("video"), limits))


def video_options(kwargs: Mapping[str, Any] | None, limits: DecodeLimits) -> VideoOptions:
    """Video sampling from media_io_kwargs["video"]: `fps` in (0, video_max_fps], `max_frames` in
    [1, video_max_frames]; operator defaults for what is not given."""
    if kwargs is None:
        return VideoOptions(limits.video_fps, limits.video_max_frames)
    if not isinstance(kwargs, Mapping):
        raise _option_error("media_io_kwargs.video must be an object")
    unknown = sorted(set(kwargs) - {"fps", "max_frames"})
    if unknown:
        raise _option_error(f"media_io_kwargs.video: unknown option {unknown[0]!r}; accepted: fps, max_frames")
    fps = kwargs.get("fps", limits.video_fps)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= limits.video_max_fps:
        raise _option_error(f"media_io_kwargs.video.fps must be a number in (0, {limits.video_max_fps}], "
                            f"not {fps!r}")
    max_frames = kwargs.get("max_frames", limits.video_max_frames)
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) \
            or not 1 <= max_frames <= limits.video_max_frames:
        raise _option_error(f"media_io_kwargs.video.max_frames must be an integer in "
                            f"[1, {limits.video_max_frames}], not {max_frames!r}")
    return VideoOptions(float(fps), max_frames)


def _option_error(message: str) -> MediaDecodeError:
    return MediaDecodeError(message, param="media_io_kwargs")


# ------------------------------------------------------------------------------------------------ images


@functools.cache
def _pil() -> Any:
    import warnings

    from PIL import Image

    # Our own cap (checked from the header) decides; Pillow's warning above its default cap would only be noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


def decode_image(data: bytes, limits: DecodeLimits, *, digest: bytes | None = None) -> DecodedImage:
    """An (H, W, 3) uint8 RGB image from encoded bytes: EXIF orientation applied, alpha composited on white;
    `digest` (content_digest(data)) when the caller already has it."""
    Image = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data), formats=limits.image_formats)
    except Image.DecompressionBombError as e:  # Pillow's own cap (2 x PIL.Image.MAX_IMAGE_PIXELS) fired first
        raise MediaDecodeError(f"image refused (decompression bomb check): {_reason(e)}") from None
    except UnidentifiedImageError:
        raise MediaDecodeError(f"not an image in an accepted format "
                               f"({', '.join(limits.image_formats)})") from None
    except Exception as e:
        raise MediaDecodeError(f"corrupt image data: {_reason(e)}") from None
    with img:
        w, h = img.size
        if w * h > limits.max_image_pixels:
            raise MediaDecodeError(f"image refused: {w}x{h} is {w * h} pixels, over the limit of "
                                   f"{limits.max_image_pixels} pixels")
        if w < 1 or h < 1:
            raise MediaDecodeError(f"image has no pixels ({w}x{h})")
        try:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            arr = np.asarray(_rgb(Image, img))
        except Exception as e:
            raise MediaDecodeError(f"corrupt image data: {_reason(e)}") from None
    uuid, content_hash = media_identity(digest or content_digest(data))
    arr = _frozen(arr)
    return DecodedImage(arr, arr.shape[1], arr.shape[0], content_hash, uuid)


def _rgb(Image: Any, img: Any) -> Any:
    if img.mode == "RGB":
        return img
    if img.mode == "I" or img.mode.startswith("I;16"):  # 16-bit gray: Pillow's convert would clip at 255
        gray = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) // 257
        return Image.fromarray(gray.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", img.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


# ------------------------------------------------------------------------------------------------- video


def _video_format(data: bytes) -> str:
    """The demuxer for these bytes, from their magic numbers: MP4 / MOV, Matroska / WebM, AVI."""
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    raise MediaDecodeError("not a video in an accepted container (MP4 / MOV, WebM / Matroska, AVI)")


def decode_video(data: bytes, limits: DecodeLimits, options: VideoOptions | None = None, *,
                 digest: bytes | None = None) -> DecodedVideo:
    """Frames sampled at options.fps across the whole video, at most options.max_frames of them (the rate
    drops to spread them over the video when it is longer than max_frames / fps)."""
    import av

    opts = options or video_options(None, limits)
    fmt = _video_format(data)
    try:
        container = av.open(io.BytesIO(data), mode="r", format=fmt)
    except Exception as e:
        raise MediaDecodeError(f"corrupt video data: {_reason(e)}") from None
    with container:
        if not container.streams.video:
            raise MediaDecodeError("the file holds no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = 1  # one request's work; the server decodes requests side by side
        _check_frame_size(ctx.width, ctx.height, limits)
        # FFmpeg itself refuses bigger frames before allocating them (a size change mid-stream).
        ctx.options = {"max_pixels": str(limits.max_video_frame_pixels)}
        duration = _duration(container, stream)
        if duration is not None and duration > limits.max_video_duration_s:
            raise MediaDecodeError(f"video refused: {duration:.1f} s long, over the limit of "
                                   f"{limits.max_video_duration_s:g} s")
        step = 1.0 / opts.fps
        if duration:
            step = max(step, duration / opts.max_frames)
        budget = math.ceil(limits.max_video_duration_s * _MAX_SOURCE_FPS)
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        frames: list[np.ndarray] = []
        start = last = None
        try:
            for n, frame in enumerate(container.decode(stream)):
                if n >= budget:
                    raise MediaDecodeError(f"video refused: more than {budget} frames")
                t = frame.time if frame.time is not None else (n / rate if rate else float(n))
                if start is None:
                    start = t
                last = t
                if t - start > limits.max_video_duration_s:
                    raise MediaDecodeError(f"video refused: longer than the limit of "
                                           f"{limits.max_video_duration_s:g} s")
                if t + 1e-6 < start + len(frames) * step:
                    continue
                if frames and (frame.height, frame.width) != frames[0].shape[:2]:
                    raise MediaDecodeError("video refused: the frame size changes mid-stream")
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) > opts.max_frames:  # longer than the header said: keep every other frame
                    frames = frames[::2]
                    step *= 2
        except MediaDecodeError:
            raise
        except Exception as e:
            raise MediaDecodeError(f"corrupt video data: {_reason(e)}") from None
    if not frames:
        raise MediaDecodeError("the video holds no decodable frame")
    if not duration:
        duration = (last - start) + (1.0 / rate if rate else 0.0)
    # The rate actually sampled: below options.fps when the source has fewer frames or the cap spread them.
    fps = len(frames) / duration if duration > 0 else opts.fps
    uuid, content_hash = media_identity(digest or content_digest(data), video_params(opts))
    return DecodedVideo(_frozen(np.stack(frames)), fps, duration, content_hash, uuid)


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _check_frame_size(width: int, height: int, limits: DecodeLimits) -> None:
    if width * height > limits.max_video_frame_pixels:
        raise MediaDecodeError(f"video refused: {width}x{height} frames are {width * height} pixels, over the "
                               f"limit of {limits.max_video_frame_pixels} pixels")


# ------------------------------------------------------------------------------------------------- audio


def decode_audio(data: bytes, limits: DecodeLimits, *, digest: bytes | None = None) -> DecodedAudio:
    """Mono float32 samples at the source's sample rate (channels averaged; no resampling)."""
    import soundfile

    try:
        f = soundfile.SoundFile(io.BytesIO(data))
    except Exception:
        raise MediaDecodeError("not audio in a format this server reads (WAV, FLAC, OGG, MP3)") from None
    with f:
        rate, n, channels = f.samplerate, f.frames, f.channels
        if not 0 < rate <= limits.max_audio_sample_rate:
            raise MediaDecodeError(f"audio refused: sample rate {rate} Hz is outside 1..."
                                   f"{limits.max_audio_sample_rate} Hz")
        if channels > limits.max_audio_channels:
            raise MediaDecodeError(f"audio refused: {channels} channels, over the limit of "
                                   f"{limits.max_audio_channels}")
        if n / rate > limits.max_audio_duration_s:
            raise MediaDecodeError(f"audio refused: {n / rate:.1f} s long, over the limit of "
                                   f"{limits.max_audio_duration_s:g} s")
        # Block by block into the mono result: memory stays at the output's size whatever the channel count.
        mono = np.empty(n, np.float32)
        pos = 0
        try:
            for block in f.blocks(blocksize=1 << 16, frames=n, dtype="float32", always_2d=True):
                k = len(block)
                mono[pos:pos + k] = block[:, 0] if channels == 1 else block.mean(axis=1, dtype=np.float32)
                pos += k
        except Exception as e:
            raise MediaDecodeError(f"corrupt audio data: {_reason(e)}") from None
    if pos == 0:
        raise MediaDecodeError("the audio holds no samples")
    if pos < n:  # the header promised more than the data holds
        mono = mono[:pos].copy()
    uuid, content_hash = media_identity(digest or content_digest(data))
    return DecodedAudio(_frozen(mono), rate, content_hash, uuid)


# ---------------------------------------------------------------------------------------------- helpers


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _reason(e: BaseException) -> str:
    """A decoder's complaint, short and without object reprs (memory addresses) in it."""
    text = str(e).split(" <", 1)[0].strip() or type(e).__name__
    return text[:200]
