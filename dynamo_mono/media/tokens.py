"""Placeholder tokens of media in a prompt: how many an item takes (ModelCard.media_input), and their expansion.

A chat template emits one placeholder token per media item (<|image_pad|>, <image>, ...). The model computes one
position per embedding its encoder produces, so the server replaces the placeholder by that many copies before
anything counts the prompt: usage.prompt_tokens, the context-length check, and the block hashes (the item's
content hash is mixed into the blocks its copies cover, block_hash.py). The count follows the model's processor
(MediaTokens: Qwen2-VL's patch arithmetic, a fixed count, or tokens per second of audio).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dynamo_mono.engine import MediaItem, MediaTokens

# Qwen2-VL's processor refuses images more elongated than this (its smart_resize); so do we, with a 400.
MAX_ASPECT_RATIO = 200


class PlaceholderError(ValueError):
    """The prompt's placeholders do not match its media (the message says how); a client error."""


def resized(spec: MediaTokens, width: int, height: int) -> tuple[int, int]:
    """(width, height) after Qwen2-VL's smart_resize: multiples of patch_size x merge_size, the pixel count
    within [min_pixels, max_pixels], the aspect ratio kept as closely as the rounding allows."""
    if width < 1 or height < 1:
        raise PlaceholderError(f"an image of {width}x{height} pixels has no pixels")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise PlaceholderError(f"an image of {width}x{height} pixels is more elongated than the model accepts "
                               f"(aspect ratio at most {MAX_ASPECT_RATIO})")
    factor = spec.patch_size * spec.merge_size
    # As transformers does: a side under factor / 2 rounds to 0, and the min_pixels branch scales it up (10x500 ->
    # 28x420, 15 tokens; flooring at one factor first would give 28x504, 18, and vLLM would disagree).
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > spec.max_pixels:
        beta = math.sqrt(height * width / spec.max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < spec.min_pixels:
        beta = math.sqrt(spec.min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


def image_tokens(spec: MediaTokens, width: int, height: int) -> int:
    """Placeholder tokens of one image (or one group of video frames) of this size."""
    if spec.fixed_tokens:
        return spec.fixed_tokens
    w, h = resized(spec, width, height)
    return (w // spec.patch_size) * (h // spec.patch_size) // (spec.merge_size * spec.merge_size)


def video_tokens(spec: MediaTokens, frames: int, width: int, height: int) -> int:
    """Placeholder tokens of a video of `frames` sampled frames of this size."""
    groups = -(-max(frames, 1) // spec.temporal_patch_size)
    return groups * image_tokens(spec, width, height)


def audio_tokens(spec: MediaTokens, seconds: float) -> int:
    """Placeholder tokens of an audio clip of this duration."""
    if spec.fixed_tokens:
        return spec.fixed_tokens
    return max(1, math.ceil(seconds * spec.tokens_per_second))


def item_tokens(spec: MediaTokens, kind: str, data: Any, sample_rate: int | None = None) -> int:
    """Placeholder tokens of one decoded item: image (H, W, 3), video (T, H, W, 3), audio (S,) at sample_rate."""
    if kind == "image":
        return image_tokens(spec, data.shape[1], data.shape[0])
    if kind == "video":
        return video_tokens(spec, data.shape[0], data.shape[2], data.shape[1])
    if kind == "audio":
        if not sample_rate:
            raise ValueError("an audio item needs its sample rate")
        return audio_tokens(spec, len(data) / sample_rate)
    raise ValueError(f"no placeholder tokens for media of kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one item's placeholder tokens went: token_ids[start:start + length]."""

    start: int
    length: int


def expand_placeholders(token_ids: list[int], kinds: Sequence[str], counts: Sequence[int],
                        specs: Mapping[str, MediaTokens]) -> tuple[list[int], list[Placement]]:
    """Replace the k-th placeholder token of each medium by counts[i] copies, where item i is that medium's k-th
    item (`kinds[i]`, in prompt order). Returns the new ids (token_ids itself when there is no item) and each item's
    placement.

    The prompt must hold exactly one placeholder per item of each medium in `specs`, and none of a medium that
    has no items (a client writing the placeholder's text into a message would otherwise make the model read an
    embedding that is not there): PlaceholderError says which medium is off and by how much.
    """
    want = {kind: 0 for kind in specs}
    for kind in kinds:
        if kind not in want:
            raise PlaceholderError(f"the model has no placeholder for {kind} input")
        want[kind] += 1
    positions: list[tuple[int, str]] = []
    for kind, spec in specs.items():
        found = token_ids.count(spec.token_id)  # C loops: a text-only prompt costs one scan per medium
        if found != want[kind]:
            raise PlaceholderError(placeholder_mismatch(kind, spec.token, found, want[kind]))
        pos = -1
        for _ in range(found):
            pos = token_ids.index(spec.token_id, pos + 1)
            positions.append((pos, kind))
    if not kinds:
        return token_ids, []
    positions.sort()
    queue: dict[str, list[int]] = {}  # the k-th item of each kind, as an index into kinds / counts
    for i, kind in enumerate(kinds):
        queue.setdefault(kind, []).append(i)
    cursor = {kind: 0 for kind in queue}
    out: list[int] = []
    placements: list[Placement | None] = [None] * len(kinds)
    prev = 0
    for pos, kind in positions:
        i = queue[kind][cursor[kind]]
        cursor[kind] += 1
        out.extend(token_ids[prev:pos])
        placements[i] = Placement(len(out), counts[i])
        out.extend([token_ids[pos]] * counts[i])
        prev = pos + 1
    out.extend(token_ids[prev:])
    return out, placements  # type: ignore[return-value]  # every item was placed (counts checked above)


def placeholder_mismatch(kind: str, token: str, found: int, want: int) -> str:
    """The client-facing message of a placeholder count that does not match the request's media."""
    items = f"{want} {kind}{'s' if want != 1 else ''}" if want else f"no {kind}"
    return (f"the prompt holds {found} {kind} placeholder{'s' if found != 1 else ''} ({token}) for {items} in the "
            f"request: message text must not contain the placeholder {token}")


def collapse_placeholders(token_ids: Sequence[int], media: Sequence[MediaItem]) -> list[int]:
    """The prompt with each item's placeholder run reduced back to its first token: for engines that expand
    placeholders themselves from token ids (the run's token is the one the template emitted)."""
    out: list[int] = []
    prev = 0
    for item in sorted(media, key=lambda m: m.start):
        out.extend(token_ids[prev:item.start + 1])
        prev = item.start + item.length
    out.extend(token_ids[prev:])
    return out


def qwen2_vl_media_tokens(preprocessor_config: Mapping[str, Any], token_id: int, token: str, *,
                          video: bool = False) -> MediaTokens:
    """A MediaTokens from a Qwen2-VL / Qwen2.5-VL style preprocessor_config.json (patch_size, merge_size,
    temporal_patch_size, min_pixels / max_pixels or size.shortest_edge / size.longest_edge); `video` picks the
    video processor's pixel bounds where the config has them (video_processor_config.json keys are the same)."""
    cfg = dict(preprocessor_config)
    size = cfg.get("size") if isinstance(cfg.get("size"), Mapping) else {}
    min_pixels = cfg.get("min_pixels") or size.get("shortest_edge") or 56 * 56
    max_pixels = cfg.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280
    if video:
        min_pixels = cfg.get("video_min_pixels", min_pixels)
        max_pixels = cfg.get("video_max_pixels", max_pixels)
    return MediaTokens(token_id=token_id, token=token, patch_size=int(cfg.get("patch_size", 14)),
                       merge_size=int(cfg.get("merge_size", 2)), min_pixels=int(min_pixels),
                       max_pixels=int(max_pixels), temporal_patch_size=int(cfg.get("temporal_patch_size", 2)))
