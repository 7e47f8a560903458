"""Encoding generated media into files: images (Pillow), MP4 / H.264 video (PyAV), audio (soundfile).

Generators call these on their own worker thread (encoding is CPU work that must stay off the event loop). Each
library is imported on first use; `output_formats(kind)` lists what this installation can produce.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from fractions import Fraction
from typing import Any, Sequence

import numpy as np

from dynamo_mono.media.contract import MediaFile

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
VIDEO_FORMATS = {"mp4": "video/mp4"}
# Dynamo's speech content types (mp3 -> audio/mpeg, flac, pcm = raw 16-bit little-endian mono/interleaved, opus).
AUDIO_FORMATS = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus",
                 "pcm": "audio/pcm"}
_SOUNDFILE = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"),
              "opus": ("OGG", "OPUS")}
# Opus encodes only these rates; other rates are refused rather than resampled behind the caller's back.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class EncodeError(ValueError):
    """The media cannot be encoded as asked (bad array shape, a format this installation lacks)."""


@functools.cache
def output_formats(kind: str) -> tuple[str, ...]:
    """The formats of `kind` this installation can encode, default first (empty when a library is missing)."""
    if kind == "image":
        return tuple(IMAGE_FORMATS) if _importable("PIL") else ()
    if kind == "video":
        if not _importable("av"):
            return ()
        import av

        return ("mp4",) if "libx264" in av.codecs_available else ()
    if kind == "audio":
        if not _importable("soundfile"):
            return ()
        import soundfile

        have = soundfile.available_formats()
        subtypes = {fmt: soundfile.available_subtypes(fmt) for fmt in ("MP3", "OGG") if fmt in have}
        out = ["wav", "flac"]
        if "MPEG_LAYER_III" in subtypes.get("MP3", {}):
            out.append("mp3")
        if "OPUS" in subtypes.get("OGG", {}):
            out.append("opus")
        return (*out, "pcm")
    raise ValueError(f"unknown media kind {kind!r}")


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def to_uint8_rgb(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 array from a PIL image, a uint8 array, or a float array in [0, 1] (diffusers' "np")."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise EncodeError(f"an image must be (height, width, 3) pixels, not shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(arr)


def encode_image(image: Any, fmt: str, *, quality: int = 90) -> MediaFile:
    """One image (PIL image or array) as png | jpeg | webp. PNG is lossless and deterministic."""
    from PIL import Image

    if fmt not in IMAGE_FORMATS:
        raise EncodeError(f"unknown image format {fmt!r}; formats: {', '.join(IMAGE_FORMATS)}")
    pil = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8_rgb(image), "RGB")
    if pil.mode not in ("RGB", "L"):
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    if fmt == "png":
        pil.save(buf, format="PNG", compress_level=6)
    elif fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format="WEBP", quality=quality)
    return MediaFile(buf.getvalue(), IMAGE_FORMATS[fmt], fmt)


def encode_images(images: Sequence[Any], fmt: str) -> list[MediaFile]:
    """Every image of a batch, in order."""
    return [encode_image(im, fmt) for im in images]


def encode_video(frames: Sequence[Any] | np.ndarray, fps: int, fmt: str = "mp4", *, crf: int = 23) -> MediaFile:
    """Frames ((T, H, W, 3) uint8 / float in [0, 1], or a list of images) as an H.264 MP4 (yuv420p, even sizes:
    an odd width or height is padded by one edge pixel, as the codec needs)."""
    import av

    if fmt not in VIDEO_FORMATS:
        raise EncodeError(f"unknown video format {fmt!r}; formats: {', '.join(VIDEO_FORMATS)}")
    if fps < 1:
        raise EncodeError(f"fps must be >= 1, not {fps}")
    arrays = [to_uint8_rgb(f) for f in frames]
    if not arrays:
        raise EncodeError("a video needs at least one frame")
    h, w = arrays[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        # One thread (an encode is one request's work, and the server runs requests side by side) and no
        # lookahead / sliced threads: with them x264's output can differ between runs of the same frames.
        stream.options = {"crf": str(crf), "preset": "veryfast",
                          "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:sync-lookahead=0"}
        stream.codec_context.thread_count = 1
        time_base = Fraction(1, int(fps))
        for i, arr in enumerate(arrays):
            if arr.shape[:2] != (h, w):
                raise EncodeError(f"every frame must be {w}x{h}, not {arr.shape[1]}x{arr.shape[0]}")
            if (ph, pw) != (h, w):
                arr = np.pad(arr, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts, frame.time_base = i, time_base  # explicit timestamps: constant frame rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return MediaFile(buf.getvalue(), VIDEO_FORMATS[fmt], fmt)


def encode_audio(samples: Any, sample_rate: int, fmt: str) -> MediaFile:
    """Samples (float in [-1, 1], shape (S,) mono or (S, C)) as wav | flac | mp3 | opus (16-bit where the format
    has a bit depth) or pcm (raw 16-bit little-endian, interleaved)."""
    if fmt not in AUDIO_FORMATS:
        raise EncodeError(f"unknown audio format {fmt!r}; formats: {', '.join(AUDIO_FORMATS)}")
    arr = np.asarray(samples, dtype=np.float32)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise EncodeError(f"audio must be (samples,) or (samples, channels), not shape {arr.shape}")
    arr = np.clip(np.nan_to_num(arr), -1.0, 1.0)
    if fmt == "pcm":
        return MediaFile((arr * 32767.0).round().astype("<i2").tobytes(), AUDIO_FORMATS[fmt], fmt)
    import soundfile

    if fmt == "opus" and sample_rate not in _OPUS_RATES:
        raise EncodeError(f"opus encodes {', '.join(map(str, _OPUS_RATES))} Hz audio, not {sample_rate} Hz")
    container, subtype = _SOUNDFILE[fmt]
    buf = io.BytesIO()
    soundfile.write(buf, arr, sample_rate, format=container, subtype=subtype)
    return MediaFile(buf.getvalue(), AUDIO_FORMATS[fmt], fmt)
