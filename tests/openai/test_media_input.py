"""Images, video and audio in chat requests, in-process on the mocker with media input on: placeholders expanded
by the image size, media-aware prefix caching, refusals naming the content part, decoded-media cache metrics."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from dynamo_mono.media import fetch as fetch_mod
from tests.media_samples import data_url, mp4, png, wav
from tests.openai.conftest import MODEL, MakeServer, Server, assert_envelope

pytestmark = pytest.mark.timeout(60)

CHAT = "/v1/chat/completions"
TEXT = "Describe this picture in detail, please."
MEDIA_OPTS = dict(mocker_input_modalities="text,image,video,audio", block_size=16)


def image_chat(url: str, text: str = TEXT, detail: str | None = None, **kw: Any) -> dict:
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": image}, {"type": "text", "text": text}]}], **kw}


@pytest.fixture
async def mm(make_server: MakeServer) -> Server:
    return await make_server("mocker", **MEDIA_OPTS)


async def usage(server: Server, payload: dict) -> dict:
    status, body = await server.post(CHAT, payload)
    assert status == 200, body
    return body["usage"]


def cached(u: dict) -> int:
    return (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0


async def test_prompt_tokens_grow_with_the_image(mm: Server) -> None:
    small = await usage(mm, image_chat(data_url(png(56, 56))))
    large = await usage(mm, image_chat(data_url(png(280, 280, seed=1))))
    # Qwen2-VL arithmetic: 56x56 -> 2x2 patches of 28 = 4 tokens; 280x280 -> 10x10 = 100 tokens
    assert large["prompt_tokens"] - small["prompt_tokens"] == 100 - 4


async def test_same_image_is_a_prefix_hit_and_another_image_is_not(mm: Server) -> None:
    a, b = data_url(png(448, 448, seed=1)), data_url(png(448, 448, seed=2))  # 256 placeholder tokens each
    first = await usage(mm, image_chat(a))
    assert cached(first) == 0
    again = await usage(mm, image_chat(a))
    assert cached(again) >= first["prompt_tokens"] - 16  # every full block but the last
    other = await usage(mm, image_chat(b))
    assert other["prompt_tokens"] == first["prompt_tokens"]
    # only the block(s) before the image's placeholders can match: the image starts a few tokens in
    assert cached(other) < 16


async def test_image_in_history_and_two_images(mm: Server) -> None:
    a, b = data_url(png(56, 56, seed=1)), data_url(png(84, 56, seed=2))
    payload = {"model": MODEL, "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": a}},
                                     {"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "image_url", "image_url": {"url": b}}]}]}
    got = await usage(mm, payload)
    text_only = await usage(mm, {**payload, "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and"}]})
    # 4 + 6 placeholders, each inside <|vision_start|>...<|vision_end|>
    assert got["prompt_tokens"] - text_only["prompt_tokens"] == (4 + 2) + (6 + 2)


async def test_detail_low_scales_the_image_down(mm: Server) -> None:
    url = data_url(png(1024, 1024, seed=3))
    high = await usage(mm, image_chat(url, detail="high"))
    low = await usage(mm, image_chat(url, detail="low"))
    # 1024^2 is over max_pixels (28^2 x 1280): scaled to 980 x 980 (35 x 28): 1225 tokens; low: 512 -> 504: 324
    assert high["prompt_tokens"] - low["prompt_tokens"] == 1225 - 324


async def test_video_and_audio_parts(mm: Server) -> None:
    text_only = await usage(mm, {"model": MODEL, "max_tokens": 4,
                                 "messages": [{"role": "user", "content": "x"}]})
    video = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(mp4(frames=8, fps=8), "video/mp4")}},
        {"type": "text", "text": "x"}]}]}
    # 1 s of video sampled at the default 2 fps -> 2 frames -> one temporal group of 64x48 -> 56x56: 4 tokens
    got = await usage(mm, video)
    assert got["prompt_tokens"] - text_only["prompt_tokens"] == 4 + 2
    # 8 fps asked -> 8 frames -> 4 groups
    got = await usage(mm, {**video, "media_io_kwargs": {"video": {"fps": 8}}})
    assert got["prompt_tokens"] - text_only["prompt_tokens"] == 16 + 2
    audio = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data_url(wav(2.0), "audio/wav").split(",", 1)[1],
                                                "format": "wav"}},
        {"type": "text", "text": "x"}]}]}
    got = await usage(mm, audio)
    assert got["prompt_tokens"] - text_only["prompt_tokens"] == 50 + 2  # 2 s x 25 tokens / s
    audio["messages"][0]["content"][0] = {"type": "audio_url", "audio_url": {"url": data_url(wav(1.0), "audio/wav")}}
    got = await usage(mm, audio)
    assert got["prompt_tokens"] - text_only["prompt_tokens"] == 25 + 2


async def test_media_reaches_the_engine_typed(make_server: MakeServer) -> None:
    from dynamo_mono.engine import MediaTokens

    server = await make_server()  # scripted engine: records its requests
    card = server.state.models[MODEL].pool.card()
    pad = server.engine.tokenizer.token_to_id("<|image_pad|>")
    card.modalities, card.media_input = ["text", "image"], {"image": MediaTokens(pad, "<|image_pad|>")}
    status, body = await server.post(CHAT, image_chat(data_url(png(56, 84, seed=4))))
    assert status == 200, body
    req = server.engine.requests[0]
    [item] = req.media
    assert (item.kind, item.data.shape, item.data.dtype.str) == ("image", (84, 56, 3), "|u1")
    assert not item.data.flags.writeable and len(item.uuid) == 64 and item.content_hash == int(item.uuid[:16], 16)
    assert req.token_ids[item.start - 1:item.start + item.length + 1] == \
        [server.engine.tokenizer.token_to_id("<|vision_start|>"), *[pad] * 6,
         server.engine.tokenizer.token_to_id("<|vision_end|>")]
    assert body["usage"]["prompt_tokens"] == len(req.token_ids)


async def test_template_without_media_parts_gets_the_placeholder_text(make_server: MakeServer, tmp_path: Any) -> None:
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                        "<|im_start|>assistant\n")
    server = await make_server("mocker", chat_template=str(template), **MEDIA_OPTS)
    status, body = await server.post(CHAT, image_chat(data_url(png(56, 56))))
    assert status == 200, body
    text_only = await usage(server, {"model": MODEL, "max_tokens": 4,
                                     "messages": [{"role": "user", "content": TEXT}]})
    # the placeholder text, then "\n" before the text: 4 image tokens + one newline token
    assert body["usage"]["prompt_tokens"] - text_only["prompt_tokens"] == 4 + 1


@pytest.mark.parametrize("part, needle, param", [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
     "does not accept image input; it accepts text", "messages[0].content[0].image_url"),
])
async def test_text_only_model_refuses_media_before_fetching(make_server: MakeServer, part: dict, needle: str,
                                                             param: str) -> None:
    server = await make_server("mocker")
    fetched: list[str] = []
    fetcher = server.state.media_fetcher
    orig = fetcher.fetch

    async def spy(url: str) -> Any:
        fetched.append(url)
        return await orig(url)

    fetcher.fetch = spy  # type: ignore[method-assign]
    status, body = await server.post(CHAT, {"model": MODEL, "max_tokens": 4,
                                            "messages": [{"role": "user", "content": [part]}]})
    assert status == 400
    err = assert_envelope(body, 400)
    assert needle in err["message"] and err["message"].startswith(param) and err["param"] == param
    assert fetched == []


BAD_PARTS = [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
     "messages[0].content[0].image_url: not an image in an accepted format"),
    ({"type": "image_url", "image_url": {"url": data_url(png(64, 64)[:-40])}},
     "messages[0].content[0].image_url: corrupt image data"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
     "messages[0].content[0].image_url: the data: URL is not valid base64"),
    ({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
     "messages[0].content[0].image_url: file:// media URLs are not allowed"),
    ({"type": "image_url", "image_url": {"url": "gopher://127.0.0.1/x"}},
     "messages[0].content[0].image_url: URL scheme 'gopher' is not supported"),
    ({"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}},
     "messages[0].content[0].image_url: http:// media URLs are not allowed"),
    ({"type": "image_url", "image_url": {"url": data_url(png(56, 56)), "detail": "ultra"}},
     "messages[0].content[0].image_url.detail: must be one of"),
    ({"type": "image_url", "image_url": {}}, "messages[0].content[0].image_url: must be an object with a 'url'"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aiff"}},
     "messages[0].content[0].input_audio.format: must be one of wav, mp3, flac, ogg"),
    ({"type": "video_url", "video_url": {"url": data_url(png(56, 56), "video/mp4")}},
     "messages[0].content[0].video_url: not a video in an accepted container"),
    ({"type": "file", "file": {"file_id": "f"}}, "messages[0].content[0]: unsupported content part type 'file'"),
    ({"type": "image_url", "image_url": {"url": data_url(png(4000, 10))}},
     "messages[0].content[0].image_url: an image of 4000x10 pixels is more elongated"),
]


@pytest.mark.parametrize("part, needle", BAD_PARTS, ids=[b[1][23:60] for b in BAD_PARTS])
async def test_bad_media_is_400_naming_the_part(mm: Server, part: dict, needle: str) -> None:
    status, body = await mm.post(CHAT, {"model": MODEL, "max_tokens": 4,
                                        "messages": [{"role": "user", "content": [part]}]})
    assert status == 400, body
    err = assert_envelope(body, 400)
    assert err["message"].startswith(needle), err
    assert err["param"] == needle.split(":")[0]


async def test_request_level_refusals(mm: Server, make_server: MakeServer) -> None:
    # the placeholder's text written into a message would make the model read an embedding that is not there
    status, body = await mm.post(CHAT, {"model": MODEL, "max_tokens": 4,
                                        "messages": [{"role": "user", "content": "look: <|image_pad|>"}]})
    assert status == 400 and "must not contain the placeholder <|image_pad|>" in body["error"]["message"]
    status, body = await mm.post(CHAT, image_chat(data_url(png(56, 56)), text="and <|image_pad|>"))
    assert status == 400 and "holds 2 image placeholders" in body["error"]["message"]
    status, body = await mm.post("/v1/completions", {"model": MODEL, "prompt": "x <|image_pad|>", "max_tokens": 2})
    assert status == 400 and body["error"]["param"] == "prompt"
    # media_io_kwargs within the operator's limits, and named
    status, body = await mm.post(CHAT, image_chat(data_url(png(56, 56)), media_io_kwargs={"video": {"fps": 99}}))
    assert status == 400 and body["error"]["param"] == "media_io_kwargs"
    status, body = await mm.post(CHAT, image_chat(data_url(png(56, 56)), media_io_kwargs={"image": {}}))
    assert status == 400 and "unknown key 'image'" in body["error"]["message"]
    few = await make_server("mocker", max_media_per_request=1, **MEDIA_OPTS)
    two = image_chat(data_url(png(56, 56)))
    two["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": data_url(png(56, 56, 1))}})
    status, body = await few.post(CHAT, two)
    assert status == 400 and "at most 1 per request" in body["error"]["message"]
    big = await make_server("mocker", max_image_pixels=100 * 100, **MEDIA_OPTS)
    status, body = await big.post(CHAT, image_chat(data_url(png(101, 100))))
    assert status == 400 and "over the limit of 10000 pixels" in body["error"]["message"]


async def test_decoded_media_cache_metrics(mm: Server) -> None:
    url = data_url(png(56, 56, seed=9))
    for _ in range(3):
        await usage(mm, image_chat(url))
    text = await (await mm.client.get("/metrics")).text()
    assert 'dynamo_frontend_media_cache_hits_total{kind="image"} 2.0' in text
    assert 'dynamo_frontend_media_cache_misses_total{kind="image"} 1.0' in text
    assert "dynamo_frontend_media_cache_bytes 9408.0" in text  # 56 x 56 x 3
    assert 'dynamo_frontend_media_fetch_seconds_count{kind="image"} 3.0' in text
    # the mocker encoded the image once: the repeats' placeholders were all prefix-cache hits (no encoder work)
    assert 'dynamo_component_embedding_cache_misses_total{dp_rank="0",model="tiny-chatml",worker_id="0"} 1.0' \
        in text


async def test_mocker_embedding_cache_skips_the_encoder(make_server: MakeServer) -> None:
    server = await make_server("mocker", multimodal_embedding_cache_capacity_gb=0.01, enable_prefix_caching=False,
                               **MEDIA_OPTS)
    url = data_url(png(56, 56, seed=10))
    for _ in range(3):
        await usage(server, image_chat(url))
    [lm] = server.state.models[MODEL].pool.instances[0].engine.load_metrics()
    assert (lm.embedding_cache_hits, lm.embedding_cache_misses, lm.embedding_cache_bytes) == (2, 1, 4 * 7168)


async def test_http_image_from_a_loopback_server(make_server: MakeServer, aiohttp_server: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(host: str, port: int) -> list[Any]:
        raise AssertionError(f"real DNS asked for {host}")

    monkeypatch.setattr(fetch_mod, "resolve_host", no_dns)
    body = png(84, 84, seed=11)
    app = web.Application()

    async def cat(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="image/png")

    app.router.add_get("/cat.png", cat)
    media = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://127.0.0.1:{media.port}/cat.png"
    refusing = await make_server("mocker", **MEDIA_OPTS)
    status, err = await refusing.post(CHAT, image_chat(url))
    assert status == 400 and "http:// media URLs are not allowed" in err["error"]["message"]
    server = await make_server("mocker", allow_internal_media=True, **MEDIA_OPTS)
    by_url = await usage(server, image_chat(url))
    by_data = await usage(server, image_chat(data_url(body)))  # same bytes: same identity, a prefix hit
    assert by_data["prompt_tokens"] == by_url["prompt_tokens"] and cached(by_data) > 0


async def test_inconsistent_video_options_stop_the_server(make_server: MakeServer) -> None:
    from dynamo_mono.config import ConfigError

    with pytest.raises(ConfigError, match=r"--video-fps=5 must not exceed --max-video-fps=3"):
        await make_server("mocker", video_fps=5.0, max_video_fps=3.0)
