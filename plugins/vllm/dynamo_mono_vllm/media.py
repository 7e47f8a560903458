"""A request's media as vLLM takes them: a TokensPrompt with one placeholder per item, multi_modal_data / _uuids.

The server expands each item's placeholder to `length` copies (EngineRequest.media[i].start / length), while vLLM
(0.32) always expands placeholders itself and does not recognise expanded ones: given N copies it would replace
the first by its own N and keep the rest as text. So each item's run collapses back to one placeholder here, and
`expansion_mismatch` checks afterwards that vLLM's expansion gave back exactly the server's token ids.
"""

from __future__ import annotations

from typing import Any, Sequence

from dynamo_mono.api import MediaItem

MEDIA_KINDS = ("image", "video", "audio")


class MediaError(ValueError):
    """The request's media do not fit its token ids (a malformed request: not retryable)."""


def _item_data(item: MediaItem) -> Any:
    """vLLM's item form: image (H, W, 3) array; video (T, H, W, 3) array, with its frame rate as video metadata;
    audio (samples, sample_rate)."""
    if item.kind == "image":
        return item.data
    if item.kind == "video":
        if item.fps:
            frames = len(item.data)
            return item.data, {"fps": float(item.fps), "total_num_frames": frames, "duration": frames / item.fps,
                               "frames_indices": list(range(frames))}
        return item.data
    if not item.sample_rate:
        raise MediaError("an audio item needs its sample rate")
    return item.data, int(item.sample_rate)


def vllm_prompt(token_ids: Sequence[int], media: Sequence[MediaItem]) -> dict[str, Any]:
    """The TokensPrompt for vLLM: token_ids with each item's placeholder run collapsed to one token, and the
    items' data and uuids per modality, in prompt order (vLLM pairs the k-th placeholder of a modality with its
    k-th item). MediaError when a range is outside the prompt, overlaps another or holds other tokens."""
    if not media:
        return {"prompt_token_ids": list(token_ids)}
    ids: list[int] = []
    data: dict[str, list[Any]] = {}
    uuids: dict[str, list[str]] = {}
    prev = 0
    n = len(token_ids)
    for item in sorted(media, key=lambda m: m.start):
        if item.kind not in MEDIA_KINDS:
            raise MediaError(f"media of kind {item.kind!r} is not one of {', '.join(MEDIA_KINDS)}")
        start, end = item.start, item.start + item.length
        if item.length < 1 or start < prev or end > n:
            raise MediaError(f"{item.kind} placeholder range [{start}, {end}) does not fit the prompt "
                             f"({n} tokens; ranges must be non-empty, in order, not overlapping)")
        token = token_ids[start]
        run = token_ids[start:end]
        if run.count(token) != item.length:
            raise MediaError(f"{item.kind} placeholder range [{start}, {end}) holds other tokens than its "
                             f"placeholder {token}")
        ids.extend(token_ids[prev:start])
        ids.append(token)
        prev = end
        data.setdefault(item.kind, []).append(_item_data(item))
        uuids.setdefault(item.kind, []).append(item.uuid)
    ids.extend(token_ids[prev:])
    return {"prompt_token_ids": ids, "multi_modal_data": data, "multi_modal_uuids": uuids}


def expansion_mismatch(expected: Sequence[int], got: Sequence[int] | None,
                       media: Sequence[MediaItem]) -> str | None:
    """None when vLLM's processed prompt equals the server's; else why not, per item (placeholder counts)."""
    if got is None or len(got) == len(expected) and list(got) == list(expected):
        return None
    ordered = sorted(media, key=lambda m: m.start)
    counts = _runs(got, [expected[m.start] for m in ordered])
    parts = [f"{m.kind} {i}: {m.length} given, vLLM's processor made {n}"
             for i, (m, n) in enumerate(zip(ordered, counts)) if n != m.length]
    detail = "; ".join(parts) or "the text tokens differ"
    return (f"the prompt's media placeholders do not match the model's processor ({detail}): the server's "
            f"placeholder counts (model card media_input) disagree with vLLM")


def _runs(ids: Sequence[int], tokens: list[int]) -> list[int]:
    """Lengths of the successive runs of each item's placeholder token in ids, in order."""
    out: list[int] = []
    i = 0
    n = len(ids)
    for token in tokens:
        while i < n and ids[i] != token:
            i += 1
        j = i
        while j < n and ids[j] == token:
            j += 1
        out.append(j - i)
        i = j
    return out
