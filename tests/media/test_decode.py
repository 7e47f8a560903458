"""Decoding client media under operator limits, media_io_kwargs, and the decoded-media cache."""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from dynamo_mono.media import decode
from dynamo_mono.media.cache import MediaCache, MediaKey
from dynamo_mono.media.decode import (
    DecodeLimits, MediaDecodeError, VideoOptions, content_digest, decode_audio, decode_image, decode_video,
    media_identity, media_io_options, video_options,
)
from dynamo_mono.media.encode import encode_audio, encode_image, encode_video
from dynamo_mono.serving.errors import InvalidRequest

LIMITS = DecodeLimits()


def png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height RGB, with one tiny IDAT: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def assert_clean_message(err: pytest.ExceptionInfo) -> None:
    text = str(err.value)
    assert "<_io" not in text and " at 0x" not in text and len(text) < 300


# ------------------------------------------------------------------------------------------------ images


def test_png_roundtrip_and_identity():
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = png(arr)
    img = decode_image(data, LIMITS)
    assert (img.width, img.height) == (7, 5)
    assert np.array_equal(img.array, arr) and img.array.dtype == np.uint8
    assert not img.array.flags.writeable  # shared through the cache
    assert img.uuid == hashlib.sha256(data).hexdigest()
    assert img.content_hash == int(img.uuid[:16], 16)
    assert decode_image(data, LIMITS, digest=content_digest(data)).content_hash == img.content_hash
    other = png(arr[::-1].copy())
    assert decode_image(other, LIMITS).content_hash != img.content_hash


def test_jpeg_exif_orientation_is_applied():
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: top half red, bottom half blue
    stored[:10] = (255, 0, 0)
    stored[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif)
    img = decode_image(buf.getvalue(), LIMITS)
    assert (img.width, img.height) == (20, 40)
    right, left = img.array[20, 16], img.array[20, 3]  # the top went to the right
    assert right[0] > 200 and right[2] < 60
    assert left[2] > 200 and left[0] < 60


def test_alpha_is_composited_on_white_and_gray_becomes_rgb():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    img = decode_image(png(rgba), LIMITS).array
    assert img.shape == (2, 2, 3)
    assert tuple(img[0, 0]) == (255, 0, 0)
    assert tuple(img[0, 1]) == (255, 255, 255)
    assert 120 <= img[1, 0][0] <= 135
    gray = decode_image(png(np.full((3, 3), 77, np.uint8)), LIMITS).array
    assert gray.shape == (3, 3, 3) and (gray == 77).all()
    deep = decode_image(png(np.full((3, 3), 257 * 150, np.uint16)), LIMITS).array  # 16-bit gray, scaled
    assert deep.shape == (3, 3, 3) and (deep == 150).all()


def test_decompression_bomb_refused_from_the_header_without_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    bomb = png_header_only(5000, 5000)  # 25 M pixels declared in a ~100 byte file
    assert len(bomb) < 200
    with pytest.raises(MediaDecodeError, match="5000x5000 is 25000000 pixels, over the limit of 16777216"):
        decode_image(bomb, LIMITS)
    # Far past Pillow's own cap too: refused at open, with a clear message.
    with pytest.raises(MediaDecodeError, match="decompression bomb") as err:
        decode_image(png_header_only(100_000, 100_000), LIMITS)
    assert_clean_message(err)


def test_pixel_cap_is_the_operators():
    data = png(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(MediaDecodeError, match="over the limit of 399 pixels"):
        decode_image(data, DecodeLimits(max_image_pixels=399))
    assert decode_image(data, DecodeLimits(max_image_pixels=400)).width == 20


def test_corrupt_and_unsupported_images_are_refused_clearly():
    good = png(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(MediaDecodeError, match="corrupt image data") as err:
        decode_image(good[: len(good) // 2], LIMITS)  # truncated inside IDAT
    assert_clean_message(err)
    with pytest.raises(MediaDecodeError, match="not an image in an accepted format") as err:
        decode_image(b"definitely not an image", LIMITS)
    assert_clean_message(err)
    tiff = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tiff, "TIFF")
    with pytest.raises(MediaDecodeError, match="accepted format"):
        decode_image(tiff.getvalue(), LIMITS)  # Pillow reads TIFF, the operator's list does not take it
    assert decode_image(tiff.getvalue(), DecodeLimits(image_formats=("TIFF",))).width == 4


def test_decode_error_is_an_invalid_request():
    with pytest.raises(InvalidRequest):
        decode_image(b"", LIMITS)
    assert issubclass(MediaDecodeError, ValueError)


# ------------------------------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def mp4() -> bytes:
    """3 s at 10 fps; frame i is filled with gray level 8 * i."""
    frames = np.zeros((30, 48, 64, 3), np.uint8)
    for i in range(30):
        frames[i] = 8 * i
    return encode_video(frames, 10).data


def levels(frames: np.ndarray) -> list[int]:
    return [round(float(f.mean()) / 8) for f in frames]  # back to source frame indexes (lossy codec)


def test_video_sampled_at_a_lower_fps(mp4):
    v = decode_video(mp4, LIMITS, VideoOptions(fps=2.0, max_frames=32))
    assert v.frames.shape == (6, 48, 64, 3) and v.frames.dtype == np.uint8
    assert not v.frames.flags.writeable
    assert v.duration_s == pytest.approx(3.0)
    assert v.fps == pytest.approx(2.0)
    assert levels(v.frames) == [0, 5, 10, 15, 20, 25]


def test_video_max_frames_spreads_frames_over_the_whole_video(mp4):
    v = decode_video(mp4, LIMITS, VideoOptions(fps=10.0, max_frames=4))
    assert v.frames.shape[0] == 4
    assert v.fps == pytest.approx(4 / 3.0)
    got = levels(v.frames)
    assert got[0] == 0 and got[-1] >= 22 and got == sorted(got)


def test_video_fps_above_the_source_takes_every_frame(mp4):
    v = decode_video(mp4, LIMITS, VideoOptions(fps=30.0, max_frames=32))
    assert v.frames.shape[0] == 30
    assert v.fps == pytest.approx(10.0)


def test_video_identity_includes_the_sampling(mp4):
    a = decode_video(mp4, LIMITS, VideoOptions(2.0, 32))
    b = decode_video(mp4, LIMITS, VideoOptions(2.0, 32))
    c = decode_video(mp4, LIMITS, VideoOptions(1.0, 32))
    assert a.uuid == b.uuid and a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash
    assert a.uuid == media_identity(content_digest(mp4), "fps=2.0;max_frames=32")[0]


def test_video_limits(mp4):
    with pytest.raises(MediaDecodeError, match="3.0 s long, over the limit of 2 s"):
        decode_video(mp4, DecodeLimits(max_video_duration_s=2.0))
    with pytest.raises(MediaDecodeError, match="64x48 frames are 3072 pixels, over the limit of 3000"):
        decode_video(mp4, DecodeLimits(max_video_frame_pixels=3000))


def test_video_without_a_duration_in_its_header(mp4, monkeypatch):
    # Frames are halved whenever they pass max_frames: still spread over the whole video, memory bounded.
    monkeypatch.setattr(decode, "_duration", lambda container, stream: None)
    v = decode_video(mp4, LIMITS, VideoOptions(fps=10.0, max_frames=4))
    assert levels(v.frames) == [0, 8, 16, 24]
    assert v.duration_s == pytest.approx(3.0) and v.fps == pytest.approx(4 / 3.0)
    with pytest.raises(MediaDecodeError, match="longer than the limit of 2 s"):  # checked per frame too
        decode_video(mp4, DecodeLimits(max_video_duration_s=2.0))


def test_corrupt_and_unsupported_video_refused(mp4):
    with pytest.raises(MediaDecodeError, match="accepted container"):
        decode_video(b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:1/x.ts\n", LIMITS)  # a playlist is never opened
    with pytest.raises(MediaDecodeError, match="accepted container"):
        decode_video(png(np.zeros((2, 2, 3), np.uint8)), LIMITS)
    with pytest.raises(MediaDecodeError) as err:
        decode_video(mp4[:200], LIMITS)
    assert_clean_message(err)


# ------------------------------------------------------------------------------------------ media_io_kwargs


def test_media_io_kwargs_defaults_and_overrides():
    assert video_options(None, LIMITS) == VideoOptions(LIMITS.video_fps, LIMITS.video_max_frames)
    assert media_io_options({"video": {"fps": 1, "max_frames": 8}}, LIMITS).video == VideoOptions(1.0, 8)
    assert media_io_options(None, LIMITS).video == VideoOptions(2.0, 32)


@pytest.mark.parametrize("kwargs, message", [
    ({"image": {}}, "unknown key 'image'"),
    ({"video": {"num_frames": 4}}, "unknown option 'num_frames'"),
    ({"video": {"fps": 31}}, r"fps must be a number in \(0, 30.0\]"),
    ({"video": {"fps": 0}}, "fps must be"),
    ({"video": {"fps": True}}, "fps must be"),
    ({"video": {"max_frames": 33}}, r"max_frames must be an integer in \[1, 32\]"),
    ({"video": {"max_frames": 2.0}}, "max_frames must be"),
    ({"video": "fast"}, "must be an object"),
    ([1], "must be an object"),
])
def test_media_io_kwargs_refused(kwargs, message):
    with pytest.raises(MediaDecodeError, match=message) as err:
        media_io_options(kwargs, LIMITS)
    assert err.value.param == "media_io_kwargs"


def test_limits_are_checked():
    with pytest.raises(ValueError, match="video_fps"):
        DecodeLimits(video_fps=60.0)
    with pytest.raises(ValueError, match="max_image_pixels"):
        DecodeLimits(max_image_pixels=0)
    with pytest.raises(ValueError, match="cannot open NOPE"):
        DecodeLimits(image_formats=("PNG", "NOPE"))


# ------------------------------------------------------------------------------------------------- audio


def test_wav_roundtrip_mono_and_stereo():
    t = np.arange(16_000, dtype=np.float32) / 16_000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    a = decode_audio(encode_audio(tone, 16_000, "wav").data, LIMITS)
    assert a.sample_rate == 16_000 and a.samples.dtype == np.float32 and a.samples.shape == (16_000,)
    assert np.abs(a.samples - tone).max() < 1e-4
    assert a.duration_s == pytest.approx(1.0)
    stereo = np.stack([tone, np.zeros_like(tone)], axis=1)
    b = decode_audio(encode_audio(stereo, 22_050, "flac").data, LIMITS)
    assert b.sample_rate == 22_050 and b.samples.ndim == 1
    assert np.abs(b.samples - tone / 2).max() < 1e-4
    assert a.content_hash != b.content_hash


def test_audio_limits_and_garbage():
    wav = encode_audio(np.zeros(8000, np.float32), 8000, "wav").data
    with pytest.raises(MediaDecodeError, match="1.0 s long, over the limit of 0.5 s"):
        decode_audio(wav, DecodeLimits(max_audio_duration_s=0.5))
    with pytest.raises(MediaDecodeError, match="sample rate 8000 Hz"):
        decode_audio(wav, DecodeLimits(max_audio_sample_rate=4000))
    with pytest.raises(MediaDecodeError, match="not audio"):
        decode_audio(b"RIFF\x00\x00\x00\x00nonsense", LIMITS)


# ------------------------------------------------------------------------------------------------- cache


def key(n: int) -> MediaKey:
    return MediaKey("image", n.to_bytes(32, "big"))


def test_cache_evicts_least_recently_used_by_bytes():
    cache: MediaCache[str] = MediaCache(max_bytes=100)
    for i in range(3):
        assert cache.put(key(i), f"v{i}", 30)
    assert cache.get(key(0)) == "v0"  # 0 is now the most recent: 1 goes first
    cache.put(key(3), "v3", 30)
    assert key(1) not in cache and [k in cache for k in (key(0), key(2), key(3))] == [True, True, True]
    cache.put(key(4), "v4", 60)  # needs 2 out: 2 then 0
    assert key(2) not in cache and key(0) not in cache and key(3) in cache and key(4) in cache
    s = cache.stats()
    assert (s.entries, s.bytes, s.evictions) == (2, 90, 3)


def test_cache_counts_hits_and_misses():
    cache: MediaCache[str] = MediaCache(max_bytes=1 << 20)
    assert cache.get(key(1)) is None
    cache.put(key(1), "a", 10)
    assert cache.get(key(1)) == "a" and cache.get(key(1)) == "a"
    assert cache.get(MediaKey("video", key(1).digest, VideoOptions(2.0, 32))) is None  # options are part of it
    assert (cache.hits, cache.misses) == (2, 2)


def test_cache_refuses_oversize_and_replaces_in_place():
    cache: MediaCache[str] = MediaCache(max_bytes=50)
    cache.put(key(1), "a", 40)
    assert not cache.put(key(2), "huge", 51)  # never stored, nothing evicted for it
    assert key(1) in cache and cache.evictions == 0
    cache.put(key(1), "b", 20)
    assert cache.get(key(1)) == "b" and cache.bytes == 20 and len(cache) == 1
    off: MediaCache[str] = MediaCache(max_bytes=0)
    assert not off.put(key(1), "a", 1) and off.get(key(1)) is None


def test_cache_stays_consistent_under_threads():
    cache: MediaCache[int] = MediaCache(max_bytes=1000)

    def work(base: int) -> None:
        for i in range(500):
            cache.put(key(base + i % 40), i, 7 + i % 13)
            cache.get(key(base + (i * 7) % 40))

    threads = [threading.Thread(target=work, args=(b * 100,)) for b in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = cache.stats()
    assert s.bytes <= 1000 and s.hits + s.misses == 2000
    assert s.bytes == sum(size for _, size in cache._entries.values())


def test_decoded_results_go_through_the_cache():
    data = png(np.zeros((4, 4, 3), np.uint8))
    cache: MediaCache = MediaCache(max_bytes=1 << 20)
    k = MediaKey("image", content_digest(data))
    assert cache.get(k) is None
    img = decode_image(data, LIMITS, digest=k.digest)
    cache.put(k, img, img.nbytes)
    assert cache.get(k) is img and cache.bytes == 48
