"""Block hashes of chat prompts with images, through the real prompt builder (template, fetch + decode, placeholder
expansion, hashing): media change the hashes of the blocks they cover and every later block, never the blocks
before them; equal image bytes give equal hashes; other bytes of the same size give the same tokens but other
hashes."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dynamo_mono.block_hash import block_hashes
from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.plugins import get_plugins
from dynamo_mono.server import build_state, stop_engines
from dynamo_mono.serving.chat import ChatPipeline
from tests.media_samples import data_url, png

BLOCK = 16


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[asyncio.AbstractEventLoop, ChatPipeline, Any]]:
    plugins = get_plugins()
    settings = resolve(serve_options(plugins, "mocker"), {
        "engine": "mocker", "log_level": "warning", "speedup_ratio": 0.0, "block_size": BLOCK,
        "mocker_input_modalities": "text,image"}, env={})
    loop = asyncio.new_event_loop()
    state = loop.run_until_complete(build_state(settings, plugins))
    yield loop, ChatPipeline(state), state.models["tiny-chatml"]
    loop.run_until_complete(stop_engines(state))
    loop.close()


def _messages(text: str, image: bytes, before: str) -> list[dict]:
    return [{"role": "system", "content": before},
            {"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": data_url(image)}}]}]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="ascii", exclude_characters="<>|"), max_size=40),
       before=st.sampled_from(["", "You are helpful.", "You describe images. " * 6]),
       width=st.integers(28, 200), height=st.integers(28, 200), seed=st.integers(0, 3))
def test_media_hashes_through_the_prompt_builder(world: Any, text: str, before: str, width: int, height: int,
                                                 seed: int) -> None:
    loop, pipeline, model = world
    build = lambda img: loop.run_until_complete(  # noqa: E731
        pipeline.prompt_for(model, _messages(text, img, before), tools=None))
    a = build(png(width, height, seed))
    [item] = a.media
    n_blocks = len(a.token_ids) // BLOCK
    plain = block_hashes(a.token_ids, BLOCK)  # the same tokens, hashed as if there were no media
    first = item.start // BLOCK
    assert a.block_hashes[:first] == plain[:first]
    assert all(x != y for x, y in zip(a.block_hashes[first:], plain[first:]))
    assert len(a.block_hashes) == n_blocks
    # equal bytes: equal tokens, equal hashes (the second load is a decoded-media cache hit)
    again = build(png(width, height, seed))
    assert (again.token_ids, again.block_hashes) == (a.token_ids, a.block_hashes)
    # other bytes of the same size: the same tokens, other hashes from the image's first block on
    other = build(png(width, height, seed + 10))
    assert other.token_ids == a.token_ids
    assert other.block_hashes[:first] == a.block_hashes[:first]
    assert all(x != y for x, y in zip(other.block_hashes[first:], a.block_hashes[first:]))
