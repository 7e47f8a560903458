"""Media input of chat requests, whatever API they came from: typed content parts, checked against the model's card
before anything is fetched, fetched by the one guarded fetcher, decoded off the event loop through the
decoded-media cache, and turned into the MediaItems an EngineRequest carries once their placeholders are placed.

Refusals are InvalidRequest (400) whose message and param name the content part, e.g.
"messages[0].content[1].image_url: the media host '127.0.0.1' is a loopback address; ...".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from dynamo_mono.config import Settings
from dynamo_mono.engine import MediaItem, ModelCard
from dynamo_mono.media.cache import MediaCache, MediaKey
from dynamo_mono.media.decode import (
    DecodeLimits,
    MediaDecodeError,
    MediaIoOptions,
    content_digest,
    decode_audio,
    decode_image,
    decode_video,
    media_identity,
    media_io_options,
)
from dynamo_mono.media.fetch import FetchRefused, MediaFetcher
from dynamo_mono.media.parts import MediaPart
from dynamo_mono.serving.errors import InvalidRequest

GiB = 1024 ** 3
# detail="low" (OpenAI's meaning): the model sees the image scaled down to fit 512 x 512.
LOW_DETAIL_SIZE = 512


@dataclass(frozen=True, slots=True)
class LoadedMedia:
    """A decoded part: the array an engine receives and the identity caches and block hashes key by."""

    part: MediaPart
    data: np.ndarray
    uuid: str
    content_hash: int
    fps: float | None = None
    sample_rate: int | None = None

    def item(self, start: int, length: int) -> MediaItem:
        return MediaItem(self.part.kind, self.data, self.uuid, self.content_hash, start, length, self.fps,
                         self.sample_rate)


def check_parts(card: ModelCard | None, model: str, parts: Sequence[MediaPart], max_items: int) -> None:
    """Refuse, before anything is fetched, a medium the model's engine does not take and more items than allowed."""
    accepted = set(card.modalities) if card is not None else {"text"}
    for part in parts:
        if part.kind not in accepted:
            raise part.refuse(f"model '{model}' does not accept {part.kind} input; it accepts "
                              f"{', '.join(sorted(accepted))}")
    if len(parts) > max_items:
        raise InvalidRequest(f"the request holds {len(parts)} media items; this server takes at most {max_items} "
                             "per request", param="messages")


def decode_limits(settings: Settings) -> DecodeLimits:
    """The operator's decode limits (MEDIA_INPUT_OPTIONS); ValueError on inconsistent values."""
    return DecodeLimits(max_image_pixels=settings.max_image_pixels, video_fps=settings.video_fps,
                        video_max_fps=settings.max_video_fps,
                        video_max_frames=settings.max_video_frames,
                        max_video_frame_pixels=settings.max_video_frame_pixels,
                        max_video_duration_s=settings.max_input_video_seconds,
                        max_audio_duration_s=settings.max_input_audio_seconds)


class MediaInput:
    """Fetch + decode + cache of chat requests' media; one per server (state.media_input)."""

    def __init__(self, fetcher: MediaFetcher, limits: DecodeLimits, cache: MediaCache, *, metrics: Any = None,
                 max_items: int = 16) -> None:
        self.fetcher = fetcher
        self.limits = limits
        self.cache = cache
        self.metrics = metrics
        self.max_items = max_items

    @classmethod
    def from_settings(cls, settings: Settings, fetcher: MediaFetcher, metrics: Any = None) -> "MediaInput":
        from dynamo_mono.config import ConfigError

        if settings.video_fps > settings.max_video_fps:
            raise ConfigError(f"--video-fps={settings.video_fps:g} must not exceed "
                              f"--max-video-fps={settings.max_video_fps:g}")
        try:
            limits = decode_limits(settings)
        except ValueError as exc:
            raise ConfigError(f"media input options: {exc}") from None
        cache: MediaCache = MediaCache(int(settings.media_cache_capacity_gb * GiB))
        return cls(fetcher, limits, cache, metrics=metrics, max_items=settings.max_media_per_request)

    def io_options(self, kwargs: Mapping[str, Any] | None) -> MediaIoOptions:
        """A request's media_io_kwargs resolved within the limits (InvalidRequest, param media_io_kwargs)."""
        return media_io_options(kwargs, self.limits)

    async def load_all(self, parts: Sequence[MediaPart], io: MediaIoOptions) -> list[LoadedMedia]:
        """Every part fetched and decoded, concurrently; the first refusal cancels the rest and is raised."""
        if len(parts) == 1:
            return [await self.load(parts[0], io)]
        tasks = [asyncio.ensure_future(self.load(p, io)) for p in parts]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            for t in tasks:  # no "exception never retrieved" for the ones that failed after the first
                if t.done() and not t.cancelled():
                    t.exception()

    async def load(self, part: MediaPart, io: MediaIoOptions) -> LoadedMedia:
        t0 = time.perf_counter()
        try:
            fetched = await self.fetcher.fetch(part.url)
        except FetchRefused as exc:
            raise part.refuse(str(exc)) from None
        t1 = time.perf_counter()
        try:
            loaded, hit = await asyncio.to_thread(self._decode, part, fetched.data, io)
        except MediaDecodeError as exc:
            raise part.refuse(exc.message) from None
        m = self.metrics
        if m is not None:
            m.child(m.media_fetch, part.kind).observe(t1 - t0)
            m.child(m.media_decode, part.kind).observe(time.perf_counter() - t1)
            m.child(m.media_cache_hits if hit else m.media_cache_misses, part.kind).inc()
        return loaded

    # --- worker thread ---------------------------------------------------------------------------------
    def _decode(self, part: MediaPart, data: bytes, io: MediaIoOptions) -> tuple[LoadedMedia, bool]:
        """(decoded part, whether the cache had it); the cache key is the bytes' SHA-256 and the options."""
        digest = content_digest(data)
        kind = part.kind
        options: Any = io.video if kind == "video" else ("low" if kind == "image" and part.detail == "low" else None)
        key = MediaKey(kind, digest, options)
        cached = self.cache.get(key)
        if cached is not None:
            return LoadedMedia(part, *cached), True
        if kind == "image":
            img = decode_image(data, self.limits, digest=digest)
            arr, uuid, content_hash = img.array, img.uuid, img.content_hash
            if options == "low":
                arr = _fit(arr, LOW_DETAIL_SIZE)
                uuid, content_hash = media_identity(digest, "detail=low")
            value: tuple = (arr, uuid, content_hash, None, None)
            nbytes = arr.nbytes
        elif kind == "video":
            vid = decode_video(data, self.limits, io.video, digest=digest)
            value = (vid.frames, vid.uuid, vid.content_hash, vid.fps, None)
            nbytes = vid.nbytes
        else:
            aud = decode_audio(data, self.limits, digest=digest)
            value = (aud.samples, aud.uuid, aud.content_hash, None, aud.sample_rate)
            nbytes = aud.nbytes
        self.cache.put(key, value, nbytes)
        return LoadedMedia(part, *value), False


def _fit(arr: np.ndarray, size: int) -> np.ndarray:
    """The image scaled down (never up) to fit size x size, aspect ratio kept; read-only."""
    h, w = arr.shape[:2]
    if max(h, w) <= size:
        return arr
    from PIL import Image

    img = Image.fromarray(arr)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(img)
    out.setflags(write=False)
    return out
