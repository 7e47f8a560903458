"""Images through the HTTP API to vLLM on CPU (the tiny random Qwen2-VL, two instances behind the KV router): the
openai and anthropic SDKs.

Needs the server side of media input (dynamo_mono.media.tokens: fetch, decode, placeholder expansion); skipped
where it is not there.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest

from tests.vllm.conftest import BLOCK_SIZE, ENGINE_FLAGS, VLLM_ENV

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

LIMITS = ["--limit-mm-per-prompt", '{"image": 2, "video": 1}']


def png_url(h: int, w: int, seed: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def vlm_server(tiny_vlm: Path):
    pytest.importorskip("dynamo_mono.media.tokens", reason="the server side of media input is not here")
    from conformance.server import start_server

    import dynamo_mono_vllm

    plugin_root = str(Path(dynamo_mono_vllm.__file__).resolve().parent.parent)
    env = {**VLLM_ENV, "PYTHONPATH": os.pathsep.join(p for p in (plugin_root, os.environ.get("PYTHONPATH")) if p)}
    srv = start_server([*ENGINE_FLAGS, "--model", str(tiny_vlm), "--served-model-name", "vlm", *LIMITS,
                        "--num-instances", "2", "--router-mode", "kv"], env=env, timeout=240)
    yield srv
    srv.stop(timeout=30)


def _chat(client, url: str, text: str = "What is in this picture?"):
    """One image, then the text."""
    return client.chat.completions.create(
        model="vlm", max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": text}]}])


def test_openai_sdk_images_count_cache_and_matter(vlm_server, tiny_vlm: Path) -> None:
    import openai

    from dynamo_mono_vllm.placeholders import image_tokens, placeholder_spec

    client = openai.OpenAI(base_url=vlm_server.url + "/v1", api_key="x", timeout=60, max_retries=0)
    spec = placeholder_spec(tiny_vlm)["image"]
    small, large = _chat(client, png_url(56, 56, 1)), _chat(client, png_url(224, 224, 2))
    # 56x56 -> 4 placeholder tokens, 224x224 -> 64: vLLM computed on exactly the prompt the server counted
    assert (image_tokens(spec, 56, 56), image_tokens(spec, 224, 224)) == (4, 64)
    assert large.usage.prompt_tokens - small.usage.prompt_tokens == 64 - 4
    a = png_url(100, 150, 3)
    first, again = _chat(client, a), _chat(client, a)
    assert again.choices[0].message.content == first.choices[0].message.content
    other = _chat(client, png_url(100, 150, 4))
    assert other.usage.prompt_tokens == first.usage.prompt_tokens
    two = client.chat.completions.create(
        model="vlm", max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png_url(56, 56, 5)}}, {"type": "text", "text": "and"},
            {"type": "image_url", "image_url": {"url": png_url(100, 150, 6)}}]}])
    assert two.usage.completion_tokens == 2
    with pytest.raises(openai.BadRequestError):  # vLLM's processor refuses an aspect ratio over 200: a 400
        _chat(client, png_url(2, 600, 7))
    assert _chat(client, a).usage.prompt_tokens == first.usage.prompt_tokens  # still serving


def test_kv_router_knows_which_instance_holds_an_image(vlm_server) -> None:
    """Two instances: for the same image the router's predicted overlap equals the cached tokens vLLM reports (the
    KV events' media hashes match the server's block hashes); for another image behind the same text it predicts
    no overlap, and vLLM has none (no false hit on the image's blocks)."""
    import openai

    from tests.vllm.test_vllm_server import _indexed_blocks, _metrics, _routed, _series, _wait_until

    url = vlm_server.url
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=60, max_retries=0)
    text = " ".join(f"word{i}" for i in range(60))
    a, b = png_url(100, 150, 11), png_url(100, 150, 12)

    def hits() -> float:
        return sum(_series(_metrics(url), "dynamo_component_router_kv_hit_rate_sum").values())

    before = _routed(url)
    first = _chat(client, a, text + " first")
    mid = _routed(url)
    worker = next(w for w, n in mid.items() if n > before.get(w, 0))
    blocks = first.usage.prompt_tokens // BLOCK_SIZE
    assert blocks >= 2
    _wait_until(lambda: _indexed_blocks(url, worker) >= blocks, "the first prompt's blocks indexed")
    h0 = hits()
    same = _chat(client, a, text + " second")
    after = _routed(url)
    assert next(w for w, n in after.items() if n > mid.get(w, 0)) == worker
    predicted = round((hits() - h0) * (same.usage.prompt_tokens // BLOCK_SIZE))
    cached = same.usage.prompt_tokens_details.cached_tokens
    assert cached >= BLOCK_SIZE and predicted * BLOCK_SIZE == cached, (predicted, cached)
    h1 = hits()
    other = _chat(client, b, text + " first")  # the image sits in the first block: nothing can match
    assert hits() == h1
    assert not (other.usage.prompt_tokens_details and other.usage.prompt_tokens_details.cached_tokens)


def test_anthropic_sdk_base64_image(vlm_server) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=vlm_server.url, api_key="x", timeout=60, max_retries=0)
    data = png_url(100, 150, 3).split(",", 1)[1]

    def ask(image: str):
        return client.messages.create(model="vlm", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
            {"type": "text", "text": "What is in this picture?"}]}])

    with_image = ask(data)
    assert with_image.usage.output_tokens == 4
    text_only = client.messages.create(model="vlm", max_tokens=4, messages=[
        {"role": "user", "content": "What is in this picture?"}])
    def prompt(u) -> int:  # Anthropic's input_tokens leaves out the prefix-cache reads
        return u.input_tokens + (u.cache_read_input_tokens or 0)

    assert prompt(with_image.usage) - prompt(text_only.usage) == 20 + 2  # 20 pads + vision start / end
