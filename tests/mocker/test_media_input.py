"""The mocker's media input: options and card, encoder time per item (on the virtual clock), the encoder-output
cache, and KV events whose block hashes (and media hashes) match what the frontend and router compute."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dynamo_mono.block_hash import MediaSpan, block_hashes
from dynamo_mono.config import ConfigError
from dynamo_mono.engine import EngineArgs, MediaItem
from dynamo_mono.kv_events import BlockStored
from dynamo_mono.router.indexer import KvIndexer
from mocker.engine import MockerEngine
from tests.mocker.conftest import EOS, FakeTokenizer, VirtualClock, make_request
from tests.mocker.test_engine import small_perf

PAD = {"<|image_pad|>": 257, "<|video_pad|>": 258, "<|audio_pad|>": 259}


class MediaTokenizer(FakeTokenizer):
    """The fake byte tokenizer, with the three media placeholders as its special ids 257-259."""

    def token_to_id(self, tok: str) -> int | None:
        return PAD.get(tok)

    def encode(self, text: str) -> list[int]:
        return [PAD[text]] if text in PAD else super().encode(text)


def args(**options: Any) -> EngineArgs:
    opts = {"speedup_ratio": 0.0, "block_size": 16, "mocker_input_modalities": "text,image,audio", **options}
    return EngineArgs(model_path="fake", served_model_name="fake-model", instance_id=1, max_model_len=8192,
                      eos_token_ids=[EOS], vocab_size=260, options=opts, tokenizer=MediaTokenizer())


def image(content_hash: int, start: int, length: int) -> MediaItem:
    uuid = f"{content_hash:016x}" + "0" * 48
    return MediaItem("image", np.zeros((28, 28, 3), np.uint8), uuid, content_hash, start, length)


def with_image(rid: str, item: MediaItem, prompt_len: int = 80) -> Any:
    tokens = [(i * 7 + 3) % 250 for i in range(prompt_len)]
    tokens[item.start:item.start + item.length] = [257] * item.length
    return make_request(rid, tokens, max_tokens=2, media=[item])


async def run(engine: MockerEngine, req: Any) -> list:
    return [o async for o in engine.generate(req)]


def test_options_and_card() -> None:
    card = MockerEngine(args()).model_card()
    assert card.modalities == ["text", "image", "audio"] and set(card.media_input) == {"image", "audio"}
    assert card.media_input["image"].token_id == 257 and card.media_input["audio"].tokens_per_second == 25.0
    assert MockerEngine(args(mocker_input_modalities="text")).model_card().media_input == {}
    with pytest.raises(ConfigError, match="unknown medium 'smell'"):
        MockerEngine(args(mocker_input_modalities="text,smell"))
    with pytest.raises(ConfigError, match="--mocker-image-token='<nope>' is not a single token"):
        MockerEngine(args(mocker_image_token="<nope>"))
    with pytest.raises(ConfigError, match="--mocker-video-token='<x>' applies to video input"):
        MockerEngine(args(mocker_video_token="<x>"))
    with pytest.raises(ConfigError, match="--multimodal-embedding-cache-capacity-gb=1.0 applies to"):
        MockerEngine(args(mocker_input_modalities="text", multimodal_embedding_cache_capacity_gb=1.0))


async def test_encoder_time_is_charged_once_per_item_and_skipped_on_hits(virtual_clock: VirtualClock) -> None:
    perf = small_perf()

    async def ttft(engine: MockerEngine, req: Any) -> float:
        t0 = virtual_clock.read()
        agen = engine.generate(req)
        await agen.__anext__()
        dt = virtual_clock.read() - t0
        await agen.aclose()
        return dt

    def engine(**kw: Any) -> MockerEngine:
        return MockerEngine(args(speedup_ratio=1.0, mocker_encoder_ms_per_token=0.5, **kw), perf_model=perf)

    item = image(0xAB, 5, 40)
    base = perf.step_ms([(80, 0, 1.0)], 0, 0) / 1000
    assert await ttft(engine(), with_image("a", item)) == pytest.approx(base + 40 * 0.5 / 1000)
    # the encoder-output cache: the second request's image costs nothing (prefix caching off: a full prefill)
    cached = engine(multimodal_embedding_cache_capacity_gb=0.001, enable_prefix_caching=False)
    await run(cached, with_image("a", item))  # to the end: no step of it left when "b" comes
    assert await ttft(cached, with_image("b", item)) == pytest.approx(base)
    [lm] = cached.load_metrics()
    assert (lm.embedding_cache_hits, lm.embedding_cache_misses, lm.embedding_cache_bytes) == (1, 1, 40 * 7168)
    # another image misses
    cached = engine(multimodal_embedding_cache_capacity_gb=0.001, enable_prefix_caching=False)
    await run(cached, with_image("a", item))
    assert await ttft(cached, with_image("c", image(0xCD, 5, 40))) == pytest.approx(base + 0.02)


async def test_prefix_hits_skip_the_encoder_and_need_the_same_image() -> None:
    e = MockerEngine(args())
    [first] = [o for o in await run(e, with_image("a", image(0xAB, 20, 40))) if o.prompt_tokens]
    [same] = [o for o in await run(e, with_image("b", image(0xAB, 20, 40))) if o.prompt_tokens]
    [other] = [o for o in await run(e, with_image("c", image(0xCD, 20, 40))) if o.prompt_tokens]
    assert first.cached_tokens == 0 and same.cached_tokens == 64  # all full blocks but the last
    assert other.cached_tokens == 16  # block 0 only: the image starts in block 1
    [lm] = e.load_metrics()
    assert (lm.embedding_cache_hits, lm.embedding_cache_misses) == (0, 2)  # "b" reused "a"'s KV: no encoding


async def test_kv_events_carry_media_hashes_that_the_router_indexes() -> None:
    e = MockerEngine(args(enable_prefix_caching=True))
    batches: list = []
    e.set_kv_event_sink(batches.append)
    item = image(0xAB, 3, 40)  # blocks 0-2 hold image tokens
    req = with_image("a", item)
    req.block_hashes = None  # the mocker hashes by itself: it must agree with the frontend's hashes
    await run(e, req)
    stored = [ev for b in batches for ev in b.events if isinstance(ev, BlockStored)]
    frontend = block_hashes(req.token_ids, 16, media=[MediaSpan(0xAB, 3, 40)])
    assert [h for ev in stored for h in ev.block_hashes][:5] == frontend
    assert stored[0].media_hashes[:4] == [[0xAB], [0xAB], [0xAB], []]
    for rehash in (False, True):  # the router indexes them: by the engine's hashes, or rehashing its tokens
        idx = KvIndexer(16)
        idx.add_instance((1, 0))
        if rehash:
            idx._state[(1, 0)].rehash = True
        for b in batches:
            idx.apply(b)
        assert idx.find_matches(frontend) == {(1, 0): 5}
        assert idx.find_matches(block_hashes(req.token_ids, 16)) in ({}, {(1, 0): 0})  # image-blind: no match
    # the snapshot (index recovery) keeps them
    snap = [ev for b in e.kv_snapshot() for ev in b.events]
    assert [ev.media_hashes for ev in snap[:4]] == [[[0xAB]], [[0xAB]], [[0xAB]], []]


async def test_an_item_of_a_medium_the_model_does_not_take_is_refused() -> None:
    from dynamo_mono.engine import EngineError

    e = MockerEngine(args(mocker_input_modalities="text,audio"))
    with pytest.raises(EngineError, match="does not take image input"):
        await run(e, with_image("a", image(1, 0, 4)))
