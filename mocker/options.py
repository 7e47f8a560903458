"""Command-line / env options of the mocker engine, with Dynamo's names and defaults."""

from __future__ import annotations

from dynamo_mono.config import Option
from mocker.disagg import DISAGG_OPTIONS

_G = "engine: mocker"
_MI = _G

# Media input of the mocker's chat models (--mocker-input-modalities): the placeholder tokens (defaults: the
# embedded tiny ChatML's, whose template renders image / video / audio parts), how many an item takes (Qwen2-VL's
# image processor arithmetic) and what encoding costs.
MEDIA_INPUT_OPTIONS: list[Option] = [
    Option("mocker_input_modalities", str, "text",
           "input media the model takes: comma-separated from text,image,video,audio (text is always taken); "
           "content parts of other media are refused with a 400", _MI, metavar="LIST"),
    Option("mocker_image_token", str, "<|image_pad|>",
           "placeholder token the chat template emits once per image (expanded to the image's token count)", _MI),
    Option("mocker_video_token", str, "<|video_pad|>", "placeholder token of a video", _MI),
    Option("mocker_audio_token", str, "<|audio_pad|>", "placeholder token of an audio clip", _MI),
    Option("mocker_patch_size", int, 14, "images and video frames: pixels per patch side", _MI, min=1),
    Option("mocker_merge_size", int, 2, "images and video frames: patches merged per side into one token", _MI,
           min=1),
    Option("mocker_min_pixels", int, 56 * 56, "images and video frames are scaled up to at least this many pixels",
           _MI, min=1),
    Option("mocker_max_pixels", int, 28 * 28 * 1280,
           "images and video frames are scaled down to at most this many pixels (Qwen2-VL: 1280 tokens)", _MI, min=1),
    Option("mocker_audio_tokens_per_second", float, 25.0, "audio: placeholder tokens per second of audio", _MI,
           min=0, min_exclusive=True),
    Option("mocker_encoder_ms_per_token", float, 0.015,
           "simulated encoder time per placeholder token of an item (an image of 1280 tokens: ~19 ms), charged "
           "in the step whose prefill chunk first reaches the item unless its output is cached", _MI, min=0.0),
    Option("multimodal_embedding_cache_capacity_gb", float, 0.0,
           "GiB of encoder outputs kept per dp rank, by media uuid (an item of N placeholder tokens takes "
           "N x 7 KiB); a hit skips the encoder time. 0 = no cache", _MI, min=0.0),
]
# Options that describe one medium: a non-default value needs that medium in --mocker-input-modalities.
MEDIA_INPUT_MEDIUM_OPTIONS: dict[str, tuple[str, ...]] = {
    "mocker_image_token": ("image",),
    "mocker_video_token": ("video",),
    "mocker_audio_token": ("audio",),
    "mocker_patch_size": ("image", "video"),
    "mocker_merge_size": ("image", "video"),
    "mocker_min_pixels": ("image", "video"),
    "mocker_max_pixels": ("image", "video"),
    "mocker_audio_tokens_per_second": ("audio",),
    "mocker_encoder_ms_per_token": ("image", "video", "audio"),
    "multimodal_embedding_cache_capacity_gb": ("image", "video", "audio"),
}

# KV offload tiers after Dynamo's KVBM (mocker/kv_tiers.py); sizes per dp rank.
KV_TIER_OPTIONS: list[Option] = [
    Option("kv_host_blocks", int, 0, "host-memory (G2) KV offload tier, blocks per dp rank (0 = off; "
           "DYN_KVBM_CPU_CACHE_OVERRIDE_NUM_BLOCKS)", _G, min=0),
    Option("kv_disk_blocks", int, 0, "disk (G3) KV offload tier, blocks per dp rank (0 = off; "
           "DYN_KVBM_DISK_CACHE_OVERRIDE_NUM_BLOCKS)", _G, min=0),
    Option("kv_host_gb", float, 0.0, "host tier size in GiB instead of blocks (block = --block-size x "
           "--kv-bytes-per-token; DYN_KVBM_CPU_CACHE_GB)", _G, min=0.0),
    Option("kv_disk_gb", float, 0.0, "disk tier size in GiB instead of blocks (DYN_KVBM_DISK_CACHE_GB)", _G,
           min=0.0),
    Option("kv_bytes_per_token", int, 131072, "offload tiers: KV bytes of one token (7-8B model, bf16: "
           "128 KiB); sizes GB tiers and transfer times", _G, min=1),
    Option("kv_host_bandwidth_gbps", float, 25.0, "GPU <-> host copy bandwidth, GB/s (offload and onboarding)", _G,
           min=0.0, min_exclusive=True),
    Option("kv_disk_bandwidth_gbps", float, 5.0, "host/GPU <-> disk bandwidth, GB/s", _G, min=0.0,
           min_exclusive=True),
    Option("kv_disk_offload_filter", bool, True, "offload a block host -> disk only once its frequency is >= 2 "
           "(doubles on each hit, decays by 1 per step); off = every block (DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER)",
           _G),
]

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
           "profile replacing the default timing model: a directory written by `dynamo-mono profile` (or "
           "Dynamo's profiler), or an NPZ / JSON file with prefill_isl, prefill_ttft_ms, decode_active_kv_tokens, "
           "decode_context_length, decode_itl", _G),
    Option("mocker_output", str, "random",
           "generated text: random | echo | reasoning[:PARSER] | tool-calls[:PARSER] | script:FILE", _G),
    Option("mocker_fail_after", int, None, "fail every request after this many tokens (fault injection)", _G, min=0),
    Option("mocker_fault_instances", str, None,
           "comma-separated instance ids that --mocker-fail-after applies to (default all)", _G),
    Option("mocker_crash_duration", float, 2.0, "seconds an instance stays unhealthy after mocker.crash", _G, min=0.0),
    *DISAGG_OPTIONS,
    *MEDIA_INPUT_OPTIONS,
    *KV_TIER_OPTIONS,
    Option("enable_lora", bool, True, "serve LoRA adapters (load_lora / EngineRequest.lora_name)", _G),
    Option("max_loras", int, 1, "LoRA adapters held in GPU slots at once; a request whose adapter is not in a slot "
           "waits for one no running request uses and pays --lora-load-ms (a swap)", _G, min=1),
    Option("max_lora_rank", int, 16, "largest adapter rank load_lora accepts", _G, min=1),
    Option("lora_load_ms", float, 20.0, "simulated time to swap an adapter into a GPU slot (divided by "
           "--speedup-ratio; 0 = free)", _G, min=0.0),
    Option("embedding_dim", int, 384, "embedding models (--model-kind embedding): length of the vectors", _G, min=1),
    Option("embedding_matryoshka", bool, True,
           "embedding models: allow the `dimensions` request field (truncate + renormalise)", _G),
]

# Options that mean something only for one kind of model; a non-default value for the other kind is refused.
EMBEDDING_ONLY_OPTIONS = ("embedding_dim", "embedding_matryoshka")
CHAT_ONLY_OPTIONS = ("enable_prefix_caching", "enable_chunked_prefill", "watermark", "mocker_output",
                     "mocker_fail_after", "mocker_fault_instances", "mocker_crash_duration",
                     "enable_lora", "max_loras", "max_lora_rank", "lora_load_ms",
                     *(o.name for o in DISAGG_OPTIONS), *(o.name for o in MEDIA_INPUT_OPTIONS),
                     *(o.name for o in KV_TIER_OPTIONS))

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
