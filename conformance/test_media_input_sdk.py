"""Images in chat requests through the official openai and anthropic SDKs, against a real server whose mocker takes
image input: data: URLs and http URLs of a loopback media host (--allow-internal-media). The prompt grows with the
image, the same image again is a prefix-cache hit, another image with the same text is not, and a text-only model
refuses the part by name."""

from __future__ import annotations

import base64
import io
from typing import Iterator

import anthropic
import numpy as np
import openai
import pytest
from PIL import Image

from conformance.media_host import MediaHost
from conformance.server import ServerProcess, start_server

pytestmark = pytest.mark.timeout(120)

MODEL = "tiny-chatml"
BLOCK = 16
TEXT = "Describe the picture in one word."


def _png(size: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# Every test uses its own seeds: the server is shared, and an image seen by an earlier test is a (real) hit.
IMAGES = {f"/{size}-{seed}.png": _png(size, seed) for size in (56, 224, 448) for seed in range(1, 7)}


def _data_url(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(IMAGES[path]).decode()


@pytest.fixture(scope="module")
def host() -> Iterator[MediaHost]:
    h = MediaHost(IMAGES)
    yield h
    h.close()


@pytest.fixture(scope="module")
def vision(engine_args: list[str]) -> Iterator[ServerProcess]:
    if "mocker" not in engine_args:
        pytest.skip("media input conformance runs on the mocker (--mocker-input-modalities)")
    srv = start_server(["--engine", "mocker", "--speedup-ratio", "0", "--mocker-input-modalities", "text,image",
                        "--block-size", str(BLOCK), "--allow-internal-media"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(vision: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=vision.url + "/v1", api_key="x", max_retries=0)


@pytest.fixture(scope="module")
def claude(vision: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=vision.url, api_key="x", max_retries=0)


def _ask(client: openai.OpenAI, url: str, text: str = TEXT) -> openai.types.CompletionUsage:
    r = client.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}])
    assert r.usage is not None
    return r.usage


def _cached(u: openai.types.CompletionUsage) -> int:
    return (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0


@pytest.mark.parametrize("by", ["data", "http"])
def test_openai_sdk_images(oai: openai.OpenAI, host: MediaHost, by: str) -> None:
    url = _data_url if by == "data" else (lambda p: host.url(p))
    seed, other_seed = (1, 2) if by == "data" else (3, 4)
    small = _ask(oai, url(f"/56-{seed}.png"))
    large = _ask(oai, url(f"/448-{seed}.png"))
    assert large.prompt_tokens - small.prompt_tokens == 256 - 4  # 16 x 16 vs 2 x 2 merged patches
    again = _ask(oai, url(f"/448-{seed}.png"))
    assert _cached(again) > 0 and _cached(again) >= large.prompt_tokens - BLOCK
    other = _ask(oai, url(f"/448-{other_seed}.png"), TEXT)
    assert other.prompt_tokens == large.prompt_tokens
    assert _cached(other) < BLOCK  # the text before the image may match; no block holding image tokens does


def test_anthropic_sdk_images(claude: anthropic.Anthropic, host: MediaHost) -> None:
    def ask(source: dict) -> anthropic.types.Usage:
        r = claude.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image", "source": source}, {"type": "text", "text": TEXT}]}])
        return r.usage

    def b64(path: str) -> dict:
        return {"type": "base64", "media_type": "image/png", "data": base64.b64encode(IMAGES[path]).decode()}

    total = lambda u: u.input_tokens + (u.cache_read_input_tokens or 0)  # noqa: E731
    small = ask(b64("/224-5.png"))
    large = ask({"type": "url", "url": host.url("/448-5.png")})
    assert total(large) - total(small) == 256 - 64
    again = ask(b64("/448-5.png"))  # the same bytes as the URL's: the same image
    assert (again.cache_read_input_tokens or 0) >= total(large) - BLOCK
    other = ask(b64("/448-6.png"))
    assert total(other) == total(large) and (other.cache_read_input_tokens or 0) < BLOCK


def test_text_only_model_refuses_the_part(server: ServerProcess) -> None:
    """The shared conformance server's model takes text only."""
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as exc:
        _ask(client, _data_url("/56-1.png"))
    err = exc.value.body
    assert err["param"] == "messages[0].content[0].image_url"
    assert "does not accept image input" in err["message"]
    claude = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as aexc:
        claude.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(IMAGES["/56-1.png"]).decode()}}]}])
    assert "messages.0.content.0: model 'tiny-chatml' does not accept image input" in str(aexc.value)
