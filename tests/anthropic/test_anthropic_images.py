"""Anthropic image blocks (base64 and url sources, inside tool results too) on the mocker with image input on."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web

from dynamo_mono.media import fetch as fetch_mod
from tests.anthropic.conftest import MODEL, MakeClient
from tests.media_samples import png

pytestmark = pytest.mark.timeout(60)

MM = dict(mocker_input_modalities="text,image", block_size=16, mocker_output="random")


def image_block(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": base64.b64encode(data).decode()}}


def with_image(block: dict, text: str = "What is in this image?") -> dict:
    return {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
        block, {"type": "text", "text": text}]}]}


async def post(client: Any, payload: dict, path: str = "/v1/messages") -> tuple[int, dict]:
    r = await client.post(path, json=payload, headers={"anthropic-version": "2023-06-01"})
    return r.status, await r.json()


async def test_image_tokens_and_prefix_hits(make_client: MakeClient) -> None:
    client = await make_client(**MM)
    status, small = await post(client, with_image(image_block(png(56, 56))))
    assert status == 200, small
    status, big = await post(client, with_image(image_block(png(448, 448, seed=1))))
    assert status == 200, big
    u_small, u_big = small["usage"], big["usage"]
    total = lambda u: u["input_tokens"] + u["cache_read_input_tokens"]  # noqa: E731
    assert total(u_big) - total(u_small) == 256 - 4
    status, again = await post(client, with_image(image_block(png(448, 448, seed=1))))
    assert again["usage"]["cache_read_input_tokens"] >= total(u_big) - 16
    status, other = await post(client, with_image(image_block(png(448, 448, seed=2))))
    assert total(other["usage"]) == total(u_big) and other["usage"]["cache_read_input_tokens"] < 16
    # count_tokens counts the image's placeholders as well
    status, counted = await post(client, {k: v for k, v in with_image(image_block(png(448, 448, seed=1))).items()
                                          if k != "max_tokens"}, "/v1/messages/count_tokens")
    assert status == 200 and counted["input_tokens"] == total(u_big)


async def test_url_source_and_tool_result_image(make_client: MakeClient, aiohttp_server: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(host: str, port: int) -> list[Any]:
        raise AssertionError(f"real DNS asked for {host}")

    monkeypatch.setattr(fetch_mod, "resolve_host", no_dns)
    data = png(84, 56, seed=3)

    async def img(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="image/png")

    app = web.Application()
    app.router.add_get("/i.png", img)
    media = await aiohttp_server(app, host="127.0.0.1")
    client = await make_client(allow_internal_media=True, **MM)
    url = {"type": "image", "source": {"type": "url", "url": f"http://127.0.0.1:{media.port}/i.png"}}
    status, by_url = await post(client, with_image(url))
    assert status == 200, by_url
    status, by_data = await post(client, with_image(image_block(data)))
    assert by_data["usage"]["input_tokens"] + by_data["usage"]["cache_read_input_tokens"] == \
        by_url["usage"]["input_tokens"] + by_url["usage"]["cache_read_input_tokens"]
    tool_turns = {"model": MODEL, "max_tokens": 4, "messages": [
        {"role": "user", "content": "take a picture"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "camera", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "here"}, url]}]}]}
    status, body = await post(client, tool_turns)
    assert status == 200, body


async def test_text_model_refuses_images(make_client: MakeClient) -> None:
    client = await make_client()
    status, body = await post(client, with_image(image_block(png(56, 56))))
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"] == ("messages.0.content.0: model 'tiny-chatml' does not accept image input; it "
                                        "accepts text")


@pytest.mark.parametrize("block, needle", [
    ({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AAAA"}},
     "messages.0.content.0.source.media_type: must be one of image/jpeg"),
    ({"type": "image", "source": {"type": "file", "file_id": "file_1"}}, "file sources are not supported"),
    ({"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:9/x.png"}},
     "messages.0.content.0: http:// media URLs are not allowed"),
    ({"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}},
     "messages.0.content.0: file:// media URLs are not allowed"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
     "messages.0.content.0: not an image in an accepted format"),
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "AAAA"}},
     "messages.0.content.0: document blocks are not supported"),
])
async def test_bad_image_blocks_are_400(make_client: MakeClient, block: dict, needle: str) -> None:
    client = await make_client(**MM)
    status, body = await post(client, with_image(block))
    assert status == 400, body
    assert body["error"]["type"] == "invalid_request_error" and needle in body["error"]["message"], body
