"""How many placeholder tokens vLLM gives a media item of a model directory: read from its config files, no vLLM.

vLLM (0.32) expands ONE placeholder token per item (<|image_pad|>) into as many as the vision encoder yields
embeddings. The server expands them itself (usage, context check, media-aware block hashes), so it must count the
same: `placeholder_spec(model_dir)` gives per medium the placeholder token and the processor's numbers (the
fields of dynamo_mono's MediaTokens), and `image_tokens` / `video_tokens` count exactly as vLLM's Qwen2-VL
processor does (`Qwen2VLProcessingInfo._get_vision_info`, transformers' `smart_resize`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Model types whose image / video placeholders follow Qwen2-VL's patch arithmetic in vLLM.
QWEN2_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")
MAX_ASPECT_RATIO = 200  # transformers' smart_resize refuses more elongated images


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_text(model_dir: Path, token_id: int) -> str:
    """The text of an added token (tokenizer.json's added_tokens, else tokenizer_config's added_tokens_decoder)."""
    for entry in _read(model_dir / "tokenizer.json").get("added_tokens", []):
        if entry.get("id") == token_id:
            return entry["content"]
    entry = _read(model_dir / "tokenizer_config.json").get("added_tokens_decoder", {}).get(str(token_id))
    if entry:
        return entry["content"]
    raise ValueError(f"{model_dir}: placeholder token id {token_id} is not an added token of its tokenizer")


def _pixels(proc: dict[str, Any], fallback: tuple[int, int]) -> tuple[int, int]:
    """(min_pixels, max_pixels) as transformers' Qwen2-VL processors read them: the flat min_pixels / max_pixels
    keys override size.shortest_edge / longest_edge."""
    size = proc.get("size") or {}
    lo = proc.get("min_pixels", size.get("shortest_edge", fallback[0]))
    hi = proc.get("max_pixels", size.get("longest_edge", fallback[1]))
    return int(lo), int(hi)


def placeholder_spec(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per input medium ("image", "video") of a Qwen2-VL-style model: token_id, token, patch_size, merge_size,
    temporal_patch_size, min_pixels, max_pixels, fixed_tokens (0), tokens_per_second (unused for vision).

    {} for a model whose placeholders this module cannot count (text-only models, other architectures): such a
    model is served for text only. Patch / merge / temporal sizes come from config.json's vision_config (what
    vLLM computes with), the pixel bounds from preprocessor_config.json (video: video_preprocessor_config.json
    when present, else the image processor's, as transformers falls back)."""
    d = Path(model_dir)
    config = _read(d / "config.json")
    if config.get("model_type") not in QWEN2_VL_TYPES:
        return {}
    vision = config.get("vision_config") or {}
    image_proc = _read(d / "preprocessor_config.json")
    video_path = d / "video_preprocessor_config.json"
    video_proc = _read(video_path) if video_path.is_file() else image_proc
    common = {
        "patch_size": int(vision.get("patch_size", image_proc.get("patch_size", 14))),
        "merge_size": int(vision.get("spatial_merge_size", image_proc.get("merge_size", 2))),
        "temporal_patch_size": int(vision.get("temporal_patch_size", image_proc.get("temporal_patch_size", 2))),
        "fixed_tokens": 0,
        "tokens_per_second": 25.0,
    }
    # transformers' Qwen2-VL processors' own defaults when the files say nothing
    image_px = _pixels(image_proc, (56 * 56, 28 * 28 * 1280))
    video_px = _pixels(video_proc, (128 * 28 * 28, 28 * 28 * 768) if video_proc is not image_proc else image_px)
    spec: dict[str, dict[str, Any]] = {}
    for kind, key, px in (("image", "image_token_id", image_px), ("video", "video_token_id", video_px)):
        token_id = config.get(key)
        if token_id is None:
            continue
        spec[kind] = {"token_id": int(token_id), "token": _token_text(d, int(token_id)), **common,
                      "min_pixels": px[0], "max_pixels": px[1]}
    return spec


def with_processor_kwargs(spec: dict[str, dict[str, Any]], kwargs: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The spec under vLLM's --mm-processor-kwargs: flat min_pixels / max_pixels (or size.shortest_edge /
    longest_edge) apply to images and videos, images_kwargs / videos_kwargs to one of them, as vLLM's Qwen2-VL
    processing merges them."""
    if not kwargs:
        return spec
    out = {kind: dict(s) for kind, s in spec.items()}
    for kind, scope in (("image", "images_kwargs"), ("video", "videos_kwargs")):
        if kind not in out:
            continue
        for source in (kwargs, kwargs.get(scope) or {}):
            size = source.get("size") or {}
            lo = source.get("min_pixels", size.get("shortest_edge"))
            hi = source.get("max_pixels", size.get("longest_edge"))
            if lo is not None:
                out[kind]["min_pixels"] = int(lo)
            if hi is not None:
                out[kind]["max_pixels"] = int(hi)
    return out


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) after transformers' Qwen2-VL smart_resize (what vLLM's processor computes with).

    Each side rounds to a multiple of factor (a side under factor / 2 rounds to 0: the min_pixels branch then
    scales it up), the pixel count is brought within [min_pixels, max_pixels] keeping the aspect ratio."""
    if height < 1 or width < 1:
        raise ValueError(f"an image of {width}x{height} pixels has no pixels")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got "
                         f"{max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(spec: dict[str, Any], width: int, height: int) -> int:
    """Placeholder tokens of one image: (H' / patch) x (W' / patch) / merge^2 after smart_resize."""
    return video_tokens(spec, 1, width, height)


def video_tokens(spec: dict[str, Any], frames: int, width: int, height: int) -> int:
    """Placeholder tokens of a video of `frames` frames: frames padded to a multiple of temporal_patch_size,
    one group of temporal_patch_size frames costs one image of the frame size."""
    if spec.get("fixed_tokens"):
        return int(spec["fixed_tokens"])
    patch, merge, tps = spec["patch_size"], spec["merge_size"], spec["temporal_patch_size"]
    h, w = smart_resize(height, width, patch * merge, spec["min_pixels"], spec["max_pixels"])
    padded = frames + (-frames % tps)
    groups = max(padded // tps, 1)
    return groups * (h // patch) * (w // patch) // (merge * merge)
