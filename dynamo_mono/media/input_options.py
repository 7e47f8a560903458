"""Options of media input in chat requests: decode limits, per-request item cap, the decoded-media cache."""

from __future__ import annotations

from dynamo_mono.config import Option

_GROUP = "media input"

MEDIA_INPUT_OPTIONS = [
    Option("max_media_per_request", int, 16,
           "Most images, videos and audio clips in one chat request (each is fetched and decoded).", group=_GROUP,
           min=0),
    Option("max_image_pixels", int, 4096 * 4096,
           "Largest image accepted, in pixels (width x height, read from the header before decoding: "
           "decompression bombs are refused unread).", group=_GROUP, min=1),
    Option("video_fps", float, 2.0,
           "Frames sampled per second of video, unless the request's media_io_kwargs.video.fps asks fewer.",
           group=_GROUP, min=0, min_exclusive=True),
    Option("max_video_fps", float, 30.0, "Highest media_io_kwargs.video.fps a request may ask.", group=_GROUP,
           min=0, min_exclusive=True),
    Option("max_video_frames", int, 32,
           "Most frames sampled from one video (the rate drops to cover the whole video); also the highest "
           "media_io_kwargs.video.max_frames a request may ask.", group=_GROUP, min=1),
    Option("max_video_frame_pixels", int, 1920 * 1080, "Largest video frame accepted, in pixels.", group=_GROUP,
           min=1),
    Option("max_input_video_seconds", float, 600.0, "Longest video accepted, in seconds.", group=_GROUP, min=0,
           min_exclusive=True),
    Option("max_input_audio_seconds", float, 600.0, "Longest audio clip accepted, in seconds.", group=_GROUP, min=0,
           min_exclusive=True),
    Option("media_cache_capacity_gb", float, 1.0,
           "GiB of decoded media (pixels, samples) kept for reuse, keyed by the SHA-256 of the encoded bytes "
           "and the decode options; least recently used first out. 0 = no cache.", group=_GROUP, min=0),
]
