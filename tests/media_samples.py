"""Tiny media for media-input tests: deterministic PNG / MP4 / WAV bytes, data: URLs, a model card that takes them."""

from __future__ import annotations

import base64

import numpy as np

from dynamo_mono.engine import MediaTokens
from dynamo_mono.media.encode import encode_audio, encode_image, encode_video


def png(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """A PNG of random pixels (seeded: equal seeds, equal bytes)."""
    rng = np.random.default_rng(seed)
    return encode_image(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "png").data


def mp4(frames: int = 8, width: int = 64, height: int = 48, fps: int = 8, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_video(rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8), fps, "mp4").data


def wav(seconds: float = 1.0, rate: int = 16000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return encode_audio(0.3 * np.sin(2 * np.pi * freq * t), rate, "wav").data


def data_url(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def tiny_chatml_media_tokens(tokenizer, *kinds: str) -> dict[str, MediaTokens]:  # type: ignore[no-untyped-def]
    """The embedded tiny ChatML's placeholders with Qwen2-VL's arithmetic (the mocker's defaults)."""
    names = {"image": "<|image_pad|>", "video": "<|video_pad|>", "audio": "<|audio_pad|>"}
    return {k: MediaTokens(token_id=tokenizer.token_to_id(names[k]), token=names[k]) for k in kinds}
