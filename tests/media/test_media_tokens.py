"""Placeholder arithmetic (Qwen2-VL's smart_resize, fixed counts, video groups, audio seconds) and expansion."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dynamo_mono.engine import MediaItem, MediaTokens
from dynamo_mono.media.tokens import (
    PlaceholderError,
    audio_tokens,
    collapse_placeholders,
    expand_placeholders,
    image_tokens,
    item_tokens,
    qwen2_vl_media_tokens,
    resized,
    video_tokens,
)

QWEN = MediaTokens(token_id=9, token="<|image_pad|>")  # patch 14, merge 2, 3136..1003520 pixels


@pytest.mark.parametrize("w, h, size, tokens", [
    (56, 56, (56, 56), 4),
    (28, 28, (56, 56), 4),  # scaled up to min_pixels
    (640, 480, (644, 476), 23 * 17),  # rounded to multiples of 28
    (1024, 1024, (980, 980), 35 * 35),  # scaled down under max_pixels
    (1920, 1080, (1316, 728), 47 * 26),
])
def test_qwen2_vl_arithmetic(w: int, h: int, size: tuple[int, int], tokens: int) -> None:
    assert resized(QWEN, w, h) == size
    assert image_tokens(QWEN, w, h) == tokens


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_resized_is_within_bounds_and_multiples(w: int, h: int) -> None:
    if max(w, h) / min(w, h) > 200:
        with pytest.raises(PlaceholderError, match="more elongated"):
            resized(QWEN, w, h)
        return
    rw, rh = resized(QWEN, w, h)
    assert rw % 28 == 0 and rh % 28 == 0 and rw >= 28 and rh >= 28
    assert rw * rh <= QWEN.max_pixels


def test_fixed_video_and_audio_counts() -> None:
    llava = MediaTokens(token_id=5, token="<image>", fixed_tokens=576)
    assert image_tokens(llava, 10, 4000) == 576
    assert video_tokens(QWEN, 1, 56, 56) == 4 and video_tokens(QWEN, 3, 56, 56) == 8  # groups of 2, last padded
    assert audio_tokens(QWEN, 0.01) == 1 and audio_tokens(QWEN, 2.0) == 50
    assert item_tokens(QWEN, "video", np.zeros((4, 56, 84, 3), np.uint8)) == 2 * 6
    assert item_tokens(QWEN, "audio", np.zeros(16000, np.float32), 16000) == 25


def test_expand_and_collapse() -> None:
    specs = {"image": QWEN, "audio": MediaTokens(token_id=8, token="<|audio_pad|>")}
    ids = [1, 9, 2, 8, 3, 9, 4]
    out, places = expand_placeholders(ids, ["image", "audio", "image"], [3, 2, 1], specs)
    assert out == [1, 9, 9, 9, 2, 8, 8, 3, 9, 4]
    assert [(p.start, p.length) for p in places] == [(1, 3), (5, 2), (8, 1)]
    items = [MediaItem("image", np.zeros(1), "u", 0, p.start, p.length) for p in places]
    assert collapse_placeholders(out, items) == ids
    with pytest.raises(PlaceholderError, match=r"holds 2 image placeholders \(<\|image_pad\|>\) for 1 image"):
        expand_placeholders(ids, ["image", "audio"], [3, 2], specs)
    with pytest.raises(PlaceholderError, match="holds 1 audio placeholder .* for no audio"):
        expand_placeholders([8], [], [], specs)


def test_from_a_qwen2_vl_preprocessor_config() -> None:
    cfg = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 3136, "max_pixels": 12845056}
    spec = qwen2_vl_media_tokens(cfg, 151655, "<|image_pad|>")
    assert (spec.token_id, spec.max_pixels, spec.temporal_patch_size) == (151655, 12845056, 2)
    spec = qwen2_vl_media_tokens({"size": {"shortest_edge": 3136, "longest_edge": 1 << 20}}, 1, "<x>")
    assert (spec.min_pixels, spec.max_pixels) == (3136, 1 << 20)
