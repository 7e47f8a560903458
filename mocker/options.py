"""Command-line / env options of the mocker engine, with Dynamo's names and defaults."""

from __future__ import annotations

from dynamo_mono.config import Option
from mocker.disagg import DISAGG_OPTIONS

_G = "engine: mocker"

MOCKER_OPTIONS: list[Option] = [
    Option("num_gpu_blocks_override", int, 16384, "KV cache size in blocks per dp rank", _G, min=1),
    Option("block_size", int, 64, "tokens per KV block", _G, min=2),
    Option("max_num_seqs", int, 256, "most sequences running at once per dp rank", _G, min=1),
    Option("max_num_batched_tokens", int, 8192, "token budget of one engine step", _G, min=1),
    Option("enable_prefix_caching", bool, True, "reuse cached KV blocks of shared prefixes", _G),
    Option("enable_chunked_prefill", bool, True, "split long prompts across steps", _G),
    Option("watermark", float, 0.01, "fraction of KV blocks kept free when admitting requests", _G, min=0.0, max=1.0),
    Option("speedup_ratio", float, 1.0, "divide simulated step time by this (0 = do not sleep at all)", _G, min=0.0),
    Option("data_parallel_size", int, 1, "independent scheduler + KV pool replicas in this instance", _G, min=1),
    Option("startup_time", float, 0.0, "seconds to sleep in start(), to simulate model loading", _G, min=0.0),
    Option("planner_profile_data", str, None,
           "NPZ or JSON profile (prefill_isl, prefill_ttft_ms, decode_active_kv_tokens, "
           "decode_context_length, decode_itl) replacing the default timing model", _G),
    Option("mocker_output", str, "random",
           "generated text: random | echo | reasoning[:PARSER] | tool-calls[:PARSER] | script:FILE", _G),
    Option("mocker_fail_after", int, None, "fail every request after this many tokens (fault injection)", _G, min=0),
    Option("mocker_fault_instances", str, None,
           "comma-separated instance ids that --mocker-fail-after applies to (default all)", _G),
    Option("mocker_crash_duration", float, 2.0, "seconds an instance stays unhealthy after mocker.crash", _G, min=0.0),
    *DISAGG_OPTIONS,
    Option("embedding_dim", int, 384, "embedding models (--model-kind embedding): length of the vectors", _G, min=1),
    Option("embedding_matryoshka", bool, True,
           "embedding models: allow the `dimensions` request field (truncate + renormalise)", _G),
]

# Options that mean something only for one kind of model; a non-default value for the other kind is refused.
EMBEDDING_ONLY_OPTIONS = ("embedding_dim", "embedding_matryoshka")
CHAT_ONLY_OPTIONS = ("enable_prefix_caching", "enable_chunked_prefill", "watermark", "mocker_output",
                     "mocker_fail_after", "mocker_fault_instances", "mocker_crash_duration",
                     *(o.name for o in DISAGG_OPTIONS))

_M = "media: mocker"
_SHARED = {o.name: o for o in MOCKER_OPTIONS if o.name in ("speedup_ratio", "startup_time")}

# The mocker's image / video / audio models (`--engine mocker --model-kind image|video|audio`). Names shared with a
# diffusion engine's options (max_image_size, max_num_inference_steps, ...) mean the same there.
MOCKER_MEDIA_OPTIONS: list[Option] = [
    _SHARED["speedup_ratio"],
    _SHARED["startup_time"],
    Option("media_step_ms", float, 20.0,
           "simulated time of one denoising step of one 512x512 image; scaled by width x height / 512^2, by "
           "max(1, frames / 8) and by n (audio: by seconds / 10)", _M, min=0.0),
    Option("default_num_inference_steps", int, 20, "denoising steps of a request that names none", _M, min=1),
    Option("max_num_inference_steps", int, 50, "most denoising steps a request may ask for", _M, min=1),
    Option("max_image_size", int, 1024, "image and video models: largest width and height, pixels (a multiple of 8)",
           _M, min=8),
    Option("default_image_size", str, None,
           "image and video models: WIDTHxHEIGHT made when a request names no size (unset: 512x512 for images, "
           "512x288 for video)", _M, metavar="WxH"),
    Option("default_num_frames", int, 16, "video models: frames of a request that names none", _M, min=1),
    Option("max_num_frames", int, 96, "video models: most frames a request may ask for", _M, min=1),
    Option("default_fps", int, 8, "video models: frame rate of a request that names none", _M, min=1),
    Option("max_fps", int, 30, "video models: highest frame rate a request may ask for", _M, min=1),
    Option("max_audio_seconds", float, 120.0, "audio models: longest audio a request may make, seconds", _M,
           min=0.0, min_exclusive=True),
]

# Options that mean something only for some media kinds; a non-default value for another kind is refused.
MEDIA_KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "max_image_size": ("image", "video"),
    "default_image_size": ("image", "video"),
    "default_num_frames": ("video",),
    "max_num_frames": ("video",),
    "default_fps": ("video",),
    "max_fps": ("video",),
    "max_audio_seconds": ("audio",),
}
