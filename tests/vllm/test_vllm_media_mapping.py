"""Media mapping of the vLLM plugin without an engine: the TokensPrompt, KV-event media hashes, placeholder counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynamo_mono.engine import EngineArgs, EngineError, EngineRequest, MediaItem, SamplingParams, StopConditions

pytestmark = pytest.mark.vllm

PAD, VPAD, APAD = 50, 51, 52
U1, U2, U3 = "a1" * 32, "b2" * 32, "c3" * 32


def _item(kind: str, start: int, length: int, uuid: str, data=None, **kw) -> MediaItem:
    if data is None:
        data = np.zeros((4, 4, 3), np.uint8)
    return MediaItem(kind, data, uuid, int(uuid[:16], 16), start, length, **kw)


def test_placeholder_runs_collapse_to_one_token_per_item_in_prompt_order():
    from dynamo_mono_vllm.media import vllm_prompt

    img, vid, aud = np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8, 8, 3), np.uint8), np.zeros(1600, np.float32)
    ids = [1, 2, PAD, PAD, PAD, 3, VPAD, VPAD, 4, APAD, APAD, APAD, APAD, PAD, 5]
    media = [_item("image", 13, 1, U3, img), _item("image", 2, 3, U1, img),  # listed out of order
             _item("video", 6, 2, U2, vid, fps=2.0), _item("audio", 9, 4, U3, aud, sample_rate=16000)]
    p = vllm_prompt(ids, media)
    assert p["prompt_token_ids"] == [1, 2, PAD, 3, VPAD, 4, APAD, PAD, 5]
    assert p["multi_modal_uuids"] == {"image": [U1, U3], "video": [U2], "audio": [U3]}
    data = p["multi_modal_data"]
    assert data["image"][0] is img and len(data["image"]) == 2
    frames, meta = data["video"][0]
    assert frames is vid and meta["fps"] == 2.0 and meta["total_num_frames"] == 4 and meta["duration"] == 2.0
    assert data["audio"][0][0] is aud and data["audio"][0][1] == 16000
    assert vllm_prompt(ids, []) == {"prompt_token_ids": ids}
    # a video without a frame rate goes as plain frames
    assert vllm_prompt([VPAD], [_item("video", 0, 1, U2, vid)])["multi_modal_data"]["video"][0] is vid


@pytest.mark.parametrize("media,match", [
    ([_item("image", 2, 4, U1)], "holds other tokens"),
    ([_item("image", 4, 3, U1)], "does not fit the prompt"),
    ([_item("image", 2, 3, U1), _item("image", 3, 1, U2)], "does not fit the prompt"),  # overlapping
    ([_item("image", 2, 0, U1)], "does not fit the prompt"),
    ([_item("audio", 2, 3, U1, np.zeros(10, np.float32))], "sample rate"),
    ([_item("hologram", 2, 3, U1)], "not one of image, video, audio"),
])
def test_media_that_does_not_fit_the_prompt_is_refused(media, match):
    from dynamo_mono_vllm.media import MediaError, vllm_prompt

    with pytest.raises(MediaError, match=match):
        vllm_prompt([1, 2, PAD, PAD, PAD, 3], media)


def test_expansion_mismatch_names_the_item_and_both_counts():
    from dynamo_mono_vllm.media import expansion_mismatch

    ours = [1, PAD, PAD, PAD, 2, VPAD, VPAD, 3]
    media = [_item("image", 1, 3, U1), _item("video", 5, 2, U2)]
    assert expansion_mismatch(ours, list(ours), media) is None
    assert expansion_mismatch(ours, None, media) is None
    msg = expansion_mismatch(ours, [1, PAD, PAD, PAD, 2, VPAD, VPAD, VPAD, 3], media)
    assert "video 1: 2 given, vLLM's processor made 3" in msg and "image 0" not in msg
    assert "text tokens differ" in expansion_mismatch(ours, [9, PAD, PAD, PAD, 2, VPAD, VPAD, 3], media)


def test_kv_event_extra_keys_become_per_block_media_hashes():
    from dynamo_mono_vllm.kv_listener import block_media_hashes, media_content_hash

    assert media_content_hash(U1) == int(U1[:16], 16)
    assert media_content_hash("my-lora:" + U2) == int(U2[:16], 16)  # tower-connector LoRA prefixes the uuid
    other = media_content_hash("not-a-uuid")
    assert 0 <= other < 1 << 64 and other == media_content_hash("not-a-uuid")
    assert block_media_hashes(None, 3) == [] and block_media_hashes([None, None], 2) == []
    assert block_media_hashes([("lora-a",), ("salt",)], 2) == []  # no media: no per-block lists
    keys = [(("a1" * 32, 5),), ("lora-a", ["b2" * 32, 0], (U3, 10)), None]
    assert block_media_hashes(keys, 3) == [[int(U1[:16], 16)], [int(U2[:16], 16), int(U3[:16], 16)], []]


def test_kv_listener_tags_stored_blocks_with_their_media():
    from vllm.distributed.kv_events import BlockStored as VStored
    from vllm.distributed.kv_events import KVEventBatch

    from dynamo_mono_vllm.kv_listener import KvEventListener

    lis = KvEventListener(worker_id=1)
    try:
        got = []
        lis.sink = got.append
        lis.handle(KVEventBatch(ts=1.0, events=[
            VStored(block_hashes=[11, 12], parent_block_hash=None, token_ids=list(range(8)), block_size=4,
                    lora_id=None, medium="GPU", lora_name=None, extra_keys=[((U1, 2),), None])]))
        snap = lis.snapshot()
    finally:
        lis.sock.close(0)
        lis.ctx.term()
    assert got[0].events[0].media_hashes == [[int(U1[:16], 16)], []]
    assert [ev.media_hashes for ev in snap[0].events] == [[[int(U1[:16], 16)]], []]


def _write_qwen2_vl_dir(d: Path, image_proc: dict, video_proc: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({
        "model_type": "qwen2_vl", "image_token_id": 7, "video_token_id": 8,
        "vision_config": {"patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2}}))
    (d / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"id": 7, "content": "<|image_pad|>"},
                                                                   {"id": 8, "content": "<|video_pad|>"}]}))
    (d / "preprocessor_config.json").write_text(json.dumps(image_proc))
    if video_proc is not None:
        (d / "video_preprocessor_config.json").write_text(json.dumps(video_proc))
    return d


def test_placeholder_spec_reads_the_model_directory(tmp_path: Path, tiny_model: Path):
    from dynamo_mono_vllm.placeholders import placeholder_spec

    d = _write_qwen2_vl_dir(tmp_path / "a", {"min_pixels": 100, "max_pixels": 1000, "patch_size": 14})
    spec = placeholder_spec(d)
    # the vision config's patch size wins over the processor file's: vLLM computes with the model's
    assert spec["image"] == {"token_id": 7, "token": "<|image_pad|>", "patch_size": 16, "merge_size": 2,
                             "temporal_patch_size": 2, "fixed_tokens": 0, "tokens_per_second": 25.0,
                             "min_pixels": 100, "max_pixels": 1000}
    assert (spec["video"]["token_id"], spec["video"]["min_pixels"]) == (8, 100)  # falls back to the image's
    d = _write_qwen2_vl_dir(tmp_path / "b", {"size": {"shortest_edge": 200, "longest_edge": 2000}},
                            {"size": {"shortest_edge": 300, "longest_edge": 3000}})
    spec = placeholder_spec(d)
    assert (spec["image"]["min_pixels"], spec["image"]["max_pixels"]) == (200, 2000)
    assert (spec["video"]["min_pixels"], spec["video"]["max_pixels"]) == (300, 3000)
    d = _write_qwen2_vl_dir(tmp_path / "c", {"size": {"shortest_edge": 200, "longest_edge": 2000},
                                             "min_pixels": 400, "max_pixels": 4000})
    assert placeholder_spec(d)["image"]["min_pixels"] == 400  # the flat keys win, as in transformers
    assert placeholder_spec(tiny_model) == {}  # a text-only Llama


def test_vllms_processor_kwargs_override_the_pixel_bounds():
    from dynamo_mono_vllm.placeholders import with_processor_kwargs

    spec = {"image": {"min_pixels": 1, "max_pixels": 2, "token_id": 7}, "video": {"min_pixels": 3, "max_pixels": 4}}
    assert with_processor_kwargs(spec, None) is spec
    out = with_processor_kwargs(spec, {"max_pixels": 100, "videos_kwargs": {"size": {"shortest_edge": 30}}})
    assert out["image"] == {"min_pixels": 1, "max_pixels": 100, "token_id": 7}
    assert out["video"] == {"min_pixels": 30, "max_pixels": 100}
    assert spec["image"]["max_pixels"] == 2  # not modified in place


@pytest.mark.parametrize("h,w", [(1, 1), (10, 500), (500, 10), (27, 29), (56, 56), (100, 150), (719, 1280),
                                 (4000, 3000), (14, 2000), (333, 777)])
def test_smart_resize_is_transformers(h: int, w: int):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf

    from dynamo_mono_vllm.placeholders import image_tokens, smart_resize

    for lo, hi in ((56 * 56, 28 * 28 * 64), (56 * 56, 28 * 28 * 1280), (128 * 28 * 28, 28 * 28 * 768)):
        assert smart_resize(h, w, 28, lo, hi) == hf(h, w, factor=28, min_pixels=lo, max_pixels=hi)
    spec = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 3136, "max_pixels": 50176}
    rh, rw = smart_resize(h, w, 28, 3136, 50176)
    assert image_tokens(spec, w, h) == (rh // 14) * (rw // 14) // 4


def test_the_servers_media_tokens_count_like_vllm():
    """dynamo_mono.media.tokens (the server's expansion) must count as placeholders.py, which the engine tests
    check against vLLM itself. Skipped where the server side of media input is not there."""
    tokens = pytest.importorskip("dynamo_mono.media.tokens")
    from dynamo_mono.engine import MediaTokens

    from dynamo_mono_vllm.placeholders import image_tokens, video_tokens

    spec = {"token_id": 5, "token": "<|image_pad|>", "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
            "fixed_tokens": 0, "tokens_per_second": 25.0, "min_pixels": 3136, "max_pixels": 50176}
    mt = MediaTokens(**spec)
    for h, w in [(10, 500), (500, 10), (13, 13), (28, 28), (100, 150), (719, 1280), (1000, 20)]:
        assert tokens.image_tokens(mt, w, h) == image_tokens(spec, w, h), (h, w)
        assert tokens.video_tokens(mt, 3, w, h) == video_tokens(spec, 3, w, h), (h, w)


async def test_media_for_a_model_that_takes_none_is_refused(tiny_model: Path):
    from dynamo_mono_vllm.engine import VllmEngine

    eng = VllmEngine(EngineArgs(str(tiny_model), "m", 0, 512, [2], 100, {}))
    eng.llm = object()  # never reached: the request is refused before vLLM sees it
    eng._stopped = False
    req = EngineRequest("r", [1, PAD, 2], SamplingParams(), StopConditions(max_tokens=2),
                        media=[_item("image", 1, 1, U1)])
    with pytest.raises(EngineError, match="takes no image input") as ei:
        [o async for o in eng.generate(req)]
    assert not ei.value.retryable
