"""Media generation through the official openai SDK (and raw HTTP for /v1/videos) against the mocker's image,
video and audio models, served beside a chat model from one --config file."""

from __future__ import annotations

import asyncio
import base64
import io
import urllib.request

import aiohttp
import av
import openai
import pytest
import soundfile
from PIL import Image

from conformance.server import ServerProcess, metric_value, start_server
from conformance.waits import metrics_text, wait_for_metric, wait_idle

pytestmark = pytest.mark.timeout(120)

FAST = {"speedup_ratio": 0}
CONFIG = f"""
- {{name: tiny-chatml, engine: mocker, options: {FAST}}}
- {{name: painter, engine: mocker, kind: image, options: {{speedup_ratio: 0, max_image_size: 512}}}}
- {{name: filmer, engine: mocker, kind: video, options: {{speedup_ratio: 0, max_image_size: 256}}}}
- {{name: speaker, engine: mocker, kind: audio, options: {FAST}}}
"""


@pytest.fixture(scope="module")
def media_server(tmp_path_factory: pytest.TempPathFactory):
    cfg = tmp_path_factory.mktemp("media") / "models.yaml"
    cfg.write_text(CONFIG)
    srv = start_server(["--config", str(cfg)])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(media_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=media_server.url + "/v1", api_key="unused", max_retries=0)


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_images_generate_size_n_and_seeds(client: openai.OpenAI) -> None:
    seeded = {"nvext": {"seed": 11, "num_inference_steps": 2}}
    r = client.images.generate(model="painter", prompt="a lighthouse at dusk", size="256x128", n=3,
                               response_format="b64_json", extra_body=seeded)
    assert len(r.data) == 3
    images = [_png(d.b64_json) for d in r.data]
    assert all(im.format == "PNG" and im.size == (256, 128) for im in images)
    assert len({d.b64_json for d in r.data}) == 3  # output i uses seed + i
    again = client.images.generate(model="painter", prompt="a lighthouse at dusk", size="256x128", n=1,
                                   response_format="b64_json", extra_body=seeded)
    assert again.data[0].b64_json == r.data[0].b64_json  # same seed -> identical bytes
    other = client.images.generate(model="painter", prompt="a lighthouse at dusk", size="256x128", n=1,
                                   response_format="b64_json",
                                   extra_body={"nvext": {"seed": 12, "num_inference_steps": 2}})
    assert other.data[0].b64_json != r.data[0].b64_json


def test_images_url_is_fetchable(client: openai.OpenAI) -> None:
    r = client.images.generate(model="painter", prompt="a red kite", size="64x64",
                               extra_body={"nvext": {"num_inference_steps": 1}})
    url = r.data[0].url
    assert url and r.data[0].revised_prompt == "a red kite"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(resp.read())).size == (64, 64)


def test_speech_is_a_wav_of_plausible_duration(client: openai.OpenAI) -> None:
    text = "The quick brown fox jumps over the lazy dog near the river bank."  # 13 words
    audio = client.audio.speech.create(model="speaker", voice="alloy", input=text)
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    seconds = len(samples) / rate
    assert 3.0 <= seconds <= 8.0, seconds  # about 2.5 words per second
    fast = client.audio.speech.create(model="speaker", voice="alloy", input=text, speed=2.0, response_format="flac")
    samples2, rate2 = soundfile.read(io.BytesIO(fast.content))
    assert len(samples2) / rate2 < seconds


async def test_video_is_an_mp4_with_the_frames_asked(media_server: ServerProcess) -> None:
    body = {"model": "filmer", "prompt": "clouds over hills", "size": "96x64", "response_format": "b64_json",
            "nvext": {"num_frames": 12, "fps": 6, "num_inference_steps": 2, "seed": 3}}
    async with aiohttp.ClientSession() as s, s.post(media_server.url + "/v1/videos", json=body) as r:
        assert r.status == 200, await r.text()
        out = await r.json()
    assert out["object"] == "video" and out["status"] == "completed" and out["id"].startswith("video-")
    with av.open(io.BytesIO(base64.b64decode(out["data"][0]["b64_json"]))) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
    assert len(frames) == 12 and (frames[0].width, frames[0].height) == (96, 64)


def test_chat_beside_media_models(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny-chatml", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=8)
    assert r.choices[0].message.content is not None
    kinds = {m.id: m.model_extra.get("kind") for m in client.models.list().data}
    assert kinds == {"tiny-chatml": "chat", "painter": "image", "filmer": "video", "speaker": "audio"}


@pytest.mark.parametrize("call, error", [
    (lambda c: c.images.generate(model="painter", prompt="x", n=11), openai.BadRequestError),
    (lambda c: c.images.generate(model="painter", prompt="x", n=0), openai.BadRequestError),
    (lambda c: c.images.generate(model="painter", prompt="", n=1), openai.BadRequestError),
    (lambda c: c.images.generate(model="painter", prompt="x", size="1024x1024"), openai.BadRequestError),
    (lambda c: c.images.generate(model="painter", prompt="x", extra_body={"nvext": {"num_inference_steps": 51}}),
     openai.BadRequestError),
    (lambda c: c.images.generate(model="nope", prompt="x"), openai.NotFoundError),
    (lambda c: c.images.generate(model="tiny-chatml", prompt="x"), openai.BadRequestError),
    (lambda c: c.chat.completions.create(model="painter", messages=[{"role": "user", "content": "x"}]),
     openai.BadRequestError),
    (lambda c: c.audio.speech.create(model="speaker", voice="not-a-voice", input="x"), openai.BadRequestError),
])
def test_bad_media_requests_are_4xx(client: openai.OpenAI, call, error) -> None:
    with pytest.raises(error) as info:
        call(client)
    assert info.value.status_code in (400, 404)


async def test_disconnect_mid_generation_frees_the_slot(tmp_path) -> None:
    # 50 steps of 2 s each in real time: still running when the client goes away, however fast the machine.
    cfg = tmp_path / "models.yaml"
    cfg.write_text("- {name: painter, engine: mocker, kind: image, options: {media_step_ms: 2000}}\n")
    srv = start_server(["--config", str(cfg)])
    try:
        body = {"model": "painter", "prompt": "slow", "size": "512x512", "nvext": {"num_inference_steps": 50}}
        session = aiohttp.ClientSession()
        task = asyncio.ensure_future(session.post(srv.url + "/v1/images/generations", json=body))
        await wait_for_metric(srv.url, "dynamo_engine_running_requests", lambda v: v == 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
        text = await wait_idle(srv.url)
        assert metric_value(text, "dynamo_frontend_disconnected_clients") == 1
        assert metric_value(text, "dynamo_engine_running_requests") == 0
        # The slot is free: the next request runs at once (1 step of 2 s).
        async with aiohttp.ClientSession() as s2:
            quick = {"model": "painter", "prompt": "quick", "size": "64x64", "response_format": "b64_json",
                     "nvext": {"num_inference_steps": 1}}
            async with s2.post(srv.url + "/v1/images/generations", json=quick) as r:
                assert r.status == 200
        text = await metrics_text(srv.url)
        assert metric_value(text, "dynamo_frontend_media_steps_total") < 50
    finally:
        srv.stop()
