"""Media input across the worker link: MediaItem arrays, ModelCard.media_input and BlockStored media hashes on the
wire, and a remote mocker worker that takes images (media-aware prefix hits through a real worker process)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from dynamo_mono.engine import EngineRequest, MediaItem, MediaTokens, ModelCard, SamplingParams, StopConditions
from dynamo_mono.kv_events import BlockStored, KvEventBatch
from dynamo_mono.transports import messages as m
from tests.media_samples import data_url, png
from tests.worker.harness import post_json, remote_instances, start_server, start_worker, wait_until

pytestmark = pytest.mark.timeout(60)


def _item(kind: str, data: np.ndarray, start: int, length: int, **kw: object) -> MediaItem:
    return MediaItem(kind, data, "ab" * 32, 0xABABABABABABABAB, start, length, **kw)  # type: ignore[arg-type]


def test_media_items_round_trip_as_arrays() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    video = rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    audio = rng.random(100, dtype=np.float32)
    req = EngineRequest("r", list(range(40)), SamplingParams(), StopConditions(max_tokens=2), media=[
        _item("image", image, 1, 4), _item("video", video[:, :, ::2], 6, 8, fps=2.0),  # a non-contiguous view
        _item("audio", audio, 20, 3, sample_rate=16000)])
    got = m.decode(m.encode(m.Generate(1, 0, req))).request
    for a, b in zip(got.media, req.media):
        assert (a.kind, a.uuid, a.content_hash, a.start, a.length, a.fps, a.sample_rate) == \
            (b.kind, b.uuid, b.content_hash, b.start, b.length, b.fps, b.sample_rate)
        assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data) and not a.data.flags.writeable


def test_a_bad_array_is_refused_on_decode() -> None:
    req = EngineRequest("r", [1, 2], SamplingParams(), StopConditions(max_tokens=2),
                        media=[_item("image", np.zeros((2, 2, 3), np.uint8), 0, 1)])
    raw = m.encode(m.Generate(1, 0, req))
    with pytest.raises(msgspec.ValidationError, match="invalid media array"):
        m.decode(raw.replace(b"|u1", b"|O8"))


def test_card_media_input_and_block_media_hashes_round_trip() -> None:
    card = ModelCard("m", 512, 16, modalities=["text", "image"],
                     media_input={"image": MediaTokens(7, "<|image_pad|>", max_pixels=1 << 20)})
    reg = m.decode(m.encode(m.Register("t", "m", [card], [[]])))
    assert reg.cards[0] == card
    batch = KvEventBatch(3, 0, 1, [BlockStored([1, 2], None, list(range(32)), 16, None, [[], [5, 6]])], 1.0)
    assert m.batch_from_wire(m.batch_to_wire(batch), 3) == batch
    with pytest.raises(ValueError, match="no media_input\\['image'\\]"):
        ModelCard("m", 512, 16, modalities=["text", "image"])


def test_remote_mocker_worker_takes_images() -> None:
    server = start_server(["--num-instances", "0"])
    worker = start_worker(server.url, ["--speedup-ratio", "0", "--mocker-input-modalities", "text,image",
                                       "--block-size", "16"])
    try:
        wait_until(lambda: remote_instances(server.url), 30, "the worker's instance")

        def ask(seed: int) -> dict:
            status, body = post_json(server.url + "/v1/chat/completions", {
                "model": "tiny-chatml", "max_tokens": 2, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": data_url(png(224, 224, seed=seed))}},
                    {"type": "text", "text": "what is it"}]}]})
            assert status == 200, body
            return body["usage"]

        first = ask(1)
        again = ask(1)
        other = ask(2)
        cached = lambda u: (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0  # noqa: E731
        assert first["prompt_tokens"] == other["prompt_tokens"] > 64  # 8 x 8 = 64 image tokens
        assert cached(again) >= first["prompt_tokens"] - 16 and cached(other) < 16
    finally:
        worker.stop()
        server.stop()
