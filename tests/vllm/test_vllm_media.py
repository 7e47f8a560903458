"""Images and video into vLLM through the plugin: a tiny random Qwen2-VL on one in-process VllmEngine.

The requests are what the server builds: token ids whose placeholders are already expanded to the count the
server computed (placeholders.py), plus MediaItems (decoded arrays, uuid, content hash, placeholder range).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from dynamo_mono.engine import (EngineArgs, EngineError, EngineRequest, MediaItem, SamplingParams,
                                StopConditions)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]

OPTIONS = {"dtype": "float32", "enforce_eager": True, "block_size": 32, "num_gpu_blocks_override": 64}
LIMITS = ["--limit-mm-per-prompt", '{"image": 2, "video": 1}']


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _item(kind: str, data: np.ndarray, start: int, length: int, uuid: str | None = None, **kw) -> MediaItem:
    uuid = uuid or hashlib.sha256(data.tobytes()).hexdigest()
    return MediaItem(kind, data, uuid, int(uuid[:16], 16), start, length, **kw)


class Prompts:
    """Chat-shaped token ids around media placeholders, expanded as the server does."""

    def __init__(self, model_dir: Path, spec: dict) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.spec = spec
        self.vs = self.tok.token_to_id("<|vision_start|>")
        self.ve = self.tok.token_to_id("<|vision_end|>")

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def request(self, items: list[tuple[str, np.ndarray, int]], text: str = "what is in it?", *,
                max_tokens: int = 6, rid: str = "r", uuids: list[str] | None = None, **kw) -> EngineRequest:
        """items: (kind, data, placeholder count); each becomes <|vision_start|> pad x count <|vision_end|>."""
        ids = self.ids("<|im_start|>user\n")
        media = []
        for i, (kind, data, count) in enumerate(items):
            ids.append(self.vs)
            media.append(_item(kind, data, len(ids), count, uuids[i] if uuids else None, **kw))
            ids += [self.spec[kind]["token_id"]] * count + [self.ve]
        ids += self.ids(f"{text}<|im_end|>\n<|im_start|>assistant\n")
        return EngineRequest(rid, ids, SamplingParams(temperature=0.0),
                             StopConditions(max_tokens=max_tokens, ignore_eos=True), media=media)


async def _run(engine, request: EngineRequest) -> tuple[list[int], int, int]:
    """(output tokens, prompt_tokens, cached_tokens)."""
    toks: list[int] = []
    prompt = cached = -1
    async for out in engine.generate(request):
        assert out.finish_reason != "error", out.error
        toks += out.token_ids
        if out.prompt_tokens is not None:
            prompt, cached = out.prompt_tokens, out.cached_tokens
    return toks, prompt, cached


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vlm(tiny_vlm: Path):
    from dynamo_mono_vllm.engine import VllmEngine

    engine = VllmEngine(EngineArgs(str(tiny_vlm), "vlm", 0, 1024, [2], 0, dict(OPTIONS), extra_args=list(LIMITS)))
    events: list = []
    await engine.start()
    engine.set_kv_event_sink(events.append)
    engine.events = events
    yield engine
    await engine.stop()


@pytest.fixture(scope="module")
def prompts(tiny_vlm: Path, vlm) -> Prompts:
    return Prompts(tiny_vlm, vlm.media_input)


async def test_card_says_image_and_video_with_the_placeholder_spec(vlm, tiny_vlm: Path) -> None:
    from dynamo_mono_vllm.placeholders import placeholder_spec

    card = vlm.model_card()
    assert card.modalities == ["text", "image", "video"]
    assert vlm.media_input == placeholder_spec(tiny_vlm)
    image = vlm.media_input["image"]
    assert (image["token"], image["patch_size"], image["merge_size"]) == ("<|image_pad|>", 14, 2)
    assert (image["min_pixels"], image["max_pixels"]) == (56 * 56, 28 * 28 * 64)


async def test_generates_from_expanded_placeholders_and_the_image_matters(vlm, prompts: Prompts) -> None:
    from dynamo_mono_vllm.placeholders import image_tokens

    spec = vlm.media_input["image"]
    a, b = _pixels(100, 150, 1), _pixels(100, 150, 2)
    n = image_tokens(spec, 150, 100)
    assert n == 20  # 100x150 -> 112x140 pixels -> 8x10 patches -> 20 tokens after the 2x2 merge
    req = prompts.request([("image", a, n)])
    out_a, prompt_tokens, cached = await _run(vlm, req)
    assert len(out_a) == 6 and prompt_tokens == len(req.token_ids) and cached == 0
    again, _, cached_again = await _run(vlm, prompts.request([("image", a, n)]))
    assert again == out_a and cached_again >= 32  # the same image: its blocks are prefix-cache hits
    out_b, _, cached_b = await _run(vlm, prompts.request([("image", b, n)]))
    assert out_b != out_a  # the model sees the pixels: another image, another answer
    assert cached_b == 0  # the image's block (the first) differs: no hit
    text_only = EngineRequest("t", prompts.ids("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
                              SamplingParams(temperature=0.0), StopConditions(max_tokens=3, ignore_eos=True))
    assert len((await _run(vlm, text_only))[0]) == 3


async def test_two_images_and_a_video_in_one_prompt(vlm, prompts: Prompts) -> None:
    from dynamo_mono_vllm.placeholders import image_tokens, video_tokens

    img, small = _pixels(64, 64, 3), _pixels(30, 90, 4)
    video = np.random.default_rng(5).integers(0, 256, (3, 56, 84, 3), dtype=np.uint8)
    items = [("image", img, image_tokens(vlm.media_input["image"], 64, 64)),
             ("video", video, video_tokens(vlm.media_input["video"], 3, 84, 56)),
             ("image", small, image_tokens(vlm.media_input["image"], 90, 30))]
    req = prompts.request(items)
    toks, prompt_tokens, _ = await _run(vlm, req)
    assert len(toks) == 6 and prompt_tokens == len(req.token_ids)
    # a video with its frame rate goes to vLLM with video metadata
    fps_req = prompts.request([("video", video, items[1][2])], fps=2.0)
    assert len((await _run(vlm, fps_req))[0]) == 6


@pytest.mark.parametrize("h,w", [(28, 28), (56, 56), (10, 500), (1000, 20), (300, 300), (224, 224), (57, 83)])
async def test_the_servers_count_is_vllms(vlm, prompts: Prompts, h: int, w: int) -> None:
    """placeholder_spec + image_tokens give exactly vLLM's expansion: the plugin checks vLLM's processed prompt
    against the request's token ids, so a wrong count would fail the request."""
    from dynamo_mono_vllm.placeholders import image_tokens

    n = image_tokens(vlm.media_input["image"], w, h)
    req = prompts.request([("image", _pixels(h, w, h * w), n)], max_tokens=1)
    toks, prompt_tokens, _ = await _run(vlm, req)
    assert len(toks) == 1 and prompt_tokens == len(req.token_ids)


async def test_a_count_vllm_disagrees_with_is_refused_not_migrated(vlm, prompts: Prompts) -> None:
    a = _pixels(100, 150, 6)
    for wrong in (19, 21):
        with pytest.raises(EngineError, match=f"image 0: {wrong} given, vLLM's processor made 20") as ei:
            await _run(vlm, prompts.request([("image", a, wrong)]))
        assert not ei.value.retryable
    with pytest.raises(EngineError, match="does not fit the prompt") as ei:  # a range past the prompt's end
        req = prompts.request([("image", a, 20)])
        req.media[0].length = len(req.token_ids)
        await _run(vlm, req)
    assert not ei.value.retryable
    # vLLM's own refusal (an image more elongated than its processor takes) is not retryable either
    with pytest.raises(EngineError, match="aspect ratio") as ei:
        await _run(vlm, prompts.request([("image", _pixels(2, 600, 7), 4)]))
    assert not ei.value.retryable
    assert vlm.healthy() and len((await _run(vlm, prompts.request([("image", a, 20)])))[0]) == 6


async def test_uuids_reach_vllm(vlm, prompts: Prompts) -> None:
    """vLLM keys its processor and prefix caches by multi_modal_uuids: an item sent with another item's uuid is
    taken for that item (which is why the server's uuid is a hash of the content)."""
    a, b = _pixels(100, 150, 8), _pixels(100, 150, 9)
    uuid_a = hashlib.sha256(a.tobytes()).hexdigest()
    out_a, _, _ = await _run(vlm, prompts.request([("image", a, 20)], text="uuid test"))
    out_b, _, _ = await _run(vlm, prompts.request([("image", b, 20)], text="uuid test"))
    assert out_a != out_b
    disguised, _, cached = await _run(vlm, prompts.request([("image", b, 20)], text="uuid test", uuids=[uuid_a]))
    assert disguised == out_a and cached > 0
    assert vlm.recorder.mm_queries > 0 and vlm.recorder.mm_hits > 0  # vLLM's processor cache by uuid


async def test_kv_events_carry_the_media_content_hashes(vlm, prompts: Prompts) -> None:
    from dynamo_mono.kv_events import BlockStored

    a = _pixels(100, 150, 10)
    req = prompts.request([("image", a, 20)], text="kv events " * 12)  # > 2 blocks: the image in the first
    await _run(vlm, req)
    want = req.media[0].content_hash
    deadline = asyncio.get_running_loop().time() + 30  # hang guard: events flush once per engine step
    while True:
        stored = [ev for b in vlm.events for ev in b.events if isinstance(ev, BlockStored)
                  and any(want in hs for hs in ev.media_hashes)]
        if stored or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert stored, "no BlockStored event with the image's content hash"
    ev = stored[0]
    assert ev.media_hashes[0] == [want] and len(ev.media_hashes) == len(ev.block_hashes)
    assert ev.token_ids[:len(req.token_ids)] == req.token_ids[:len(ev.token_ids)]
    assert all(hs == [] for hs in ev.media_hashes[1:])  # the text blocks after it hold no media
    snap = [e for b in vlm.kv_snapshot() for e in b.events if e.block_hashes[0] == ev.block_hashes[0]]
    assert snap and snap[0].media_hashes == [[want]]


async def test_the_embedding_cache_flag_maps_to_vllms_ec_cpu_connector(tiny_vlm: Path) -> None:
    """--multimodal-embedding-cache-capacity-gb = vLLM's ECCPUConnector (ec_both, ec_cpu_bytes), which runs on
    the V2 model runner only (Triton): refused where vLLM cannot run it, never silently dropped."""
    from dynamo_mono.config import ConfigError
    from dynamo_mono_vllm.engine_args import build_engine_args
    from vllm.triton_utils import HAS_TRITON

    args = EngineArgs(str(tiny_vlm), "m", 0, 512, [2], 0, {"multimodal_embedding_cache_capacity_gb": 0.5})
    if HAS_TRITON:
        ec = build_engine_args(args).ec_transfer_config
        assert (ec.ec_connector, ec.ec_role) == ("ECCPUConnector", "ec_both")
        assert ec.ec_connector_extra_config == {"ec_cpu_bytes": 1 << 29}
    else:
        with pytest.raises(ConfigError, match="V2 model runner"):
            build_engine_args(args)
    off = EngineArgs(str(tiny_vlm), "m", 0, 512, [2], 0, {"multimodal_embedding_cache_capacity_gb": 0.0})
    assert build_engine_args(off).ec_transfer_config is None
    with pytest.raises(ConfigError, match="one or the other"):
        build_engine_args(EngineArgs(str(tiny_vlm), "m", 0, 512, [2], 0, {"multimodal_embedding_cache_capacity_gb": 1},
                                     extra_args=["--ec-transfer-config", "{}"]))
