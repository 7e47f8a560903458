"""The media routes in-process on a scripted generator: shapes, defaults, limits, refusals, storage, metrics."""

from __future__ import annotations

import asyncio
import base64
import io

import av
import pytest
import soundfile
from PIL import Image

from conformance.waits import wait_until
from dynamo_mono.engine import EngineError
from tests.media.conftest import MODELS, generator


async def _img(c, **body):
    return await c.post("/v1/images/generations", json={"prompt": "a red fox", **body})


async def test_images_b64_size_n_and_defaults(make_client):
    c = await make_client(MODELS)
    r = await _img(c, n=3, size="128x64", response_format="b64_json", nvext={"seed": 5, "num_inference_steps": 3})
    assert r.status == 200
    body = await r.json()
    assert len(body["data"]) == 3 and all(d["revised_prompt"] == "a red fox" for d in body["data"])
    for d in body["data"]:
        im = Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))
        assert im.format == "PNG" and im.size == (128, 64)
    req = generator(c.app, "img").requests[-1]
    assert (req.n, req.width, req.height, req.num_inference_steps, req.seed) == (3, 128, 64, 3, 5)
    assert req.guidance_scale == 5.0 and req.negative_prompt is None  # the card's default
    r = await _img(c, response_format="b64_json", output_format="jpeg")
    im = Image.open(io.BytesIO(base64.b64decode((await r.json())["data"][0]["b64_json"])))
    assert im.format == "JPEG" and im.size == (64, 64)  # the card's default size


async def test_image_url_is_served_back_and_expires_by_size(make_client, tmp_path):
    c = await make_client(MODELS, media_output_fs_url=str(tmp_path / "store"), media_max_stored_bytes=1)
    r = await _img(c)
    url = (await r.json())["data"][0]["url"]
    path = url.split("/media/", 1)[1]
    assert path.startswith("image/") and path.endswith(".png")
    # Over the 1-byte cap the oldest file goes as soon as another is stored.
    r2 = await _img(c)
    url2 = (await r2.json())["data"][0]["url"]
    got = await c.get("/media/" + url2.split("/media/", 1)[1])
    assert got.status == 200 and got.content_type == "image/png"
    assert Image.open(io.BytesIO(await got.read())).size == (64, 64)
    gone = await c.get("/media/" + path)
    assert gone.status == 404 and "error" in await gone.json()
    assert not (tmp_path / "store" / path).exists()


async def test_media_get_refuses_made_up_paths(make_client):
    c = await make_client(MODELS)
    for path in ("../../etc/passwd", "image/x/../../y.png", "image/abc/0-" + "0" * 32 + ".png", "%2e%2e/secret"):
        r = await c.get("/media/" + path)
        assert r.status == 404


async def test_media_http_url_base(make_client, tmp_path):
    c = await make_client(MODELS, media_output_fs_url=str(tmp_path), media_output_http_url="https://cdn.example/m/")
    url = (await (await _img(c)).json())["data"][0]["url"]
    assert url.startswith("https://cdn.example/m/image/")
    assert (tmp_path / url.removeprefix("https://cdn.example/m/")).is_file()


@pytest.mark.parametrize("body, param, words", [
    ({"prompt": "   "}, "prompt", "empty"),
    ({"n": 0}, "n", "greater than or equal to 1"),
    ({"n": 11}, "n", "less than or equal to 10"),
    ({"size": "512x512"}, "size", "at most 256x128"),
    ({"size": "100x64"}, "size", "multiples of 8"),
    ({"size": "big"}, "size", "WIDTHxHEIGHT"),
    ({"nvext": {"num_inference_steps": 9}}, "nvext.num_inference_steps", "1..8"),
    ({"nvext": {"seed": -1}}, "nvext.seed", "greater than or equal to 0"),
    ({"quality": "hd"}, "quality", "auto"),
    ({"style": "vivid"}, "style", "Unrecognized request argument"),
    ({"model": "nope"}, "model", "does not exist"),
    ({"model": "tiny-chatml"}, "model", "chat model"),
])
async def test_image_bad_input_is_a_4xx_naming_the_field(make_client, body, param, words):
    c = await make_client(MODELS)
    r = await _img(c, **body)
    assert r.status in (400, 404)
    err = (await r.json())["error"]
    assert err["param"] == param and words in err["message"], err
    assert generator(c.app, "img").requests == []


async def test_chat_to_image_model_and_prompt_limit(make_client):
    c = await make_client(MODELS, max_media_prompt_chars=10)
    r = await c.post("/v1/chat/completions", json={"model": "img", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 400 and "image model" in (await r.json())["error"]["message"]
    r = await _img(c, prompt="x" * 11)
    assert r.status == 400 and "server limit of 10" in (await r.json())["error"]["message"]


async def test_video_shape_frames_and_reference(make_client):
    c = await make_client(MODELS)
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png, format="PNG")
    ref = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    r = await c.post("/v1/videos", json={"prompt": "waves", "model": "vid", "seconds": "1.5", "size": "64x32",
                                         "response_format": "b64_json", "input_reference": ref,
                                         "nvext": {"fps": 6, "seed": 3}})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["id"].startswith("video-") and body["object"] == "video" and body["status"] == "completed"
    assert body["progress"] == 100 and body["model"] == "vid" and body["inference_time_s"] >= 0
    data = base64.b64decode(body["data"][0]["b64_json"])
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 9 and (frames[0].width, frames[0].height) == (64, 32)  # fps 6 x 1.5 s
    req = generator(c.app, "vid").requests[-1]
    assert req.input_reference == png.getvalue() and (req.fps, req.num_frames) == (6, 9)
    r = await c.post("/v1/videos", json={"prompt": "w", "model": "vid", "nvext": {"num_frames": 25}})
    assert r.status == 400 and "1..24" in (await r.json())["error"]["message"]
    r = await c.post("/v1/videos", json={"prompt": "w", "model": "vid", "input_reference": "ftp://x/y.png"})
    assert r.status == 400 and (await r.json())["error"]["param"] == "input_reference"
    r = await c.post("/v1/videos", json={"prompt": "w"})
    assert r.status == 400 and (await r.json())["error"]["param"] == "model"


async def test_speech_formats_voice_speed(make_client):
    c = await make_client(MODELS)
    r = await c.post("/v1/audio/speech", json={"input": "one two three four five", "voice": "echo"})
    assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
    samples, rate = soundfile.read(io.BytesIO(await r.read()))
    assert rate == 16000 and len(samples) == 2 * 16000  # five words at 2.5 words per second
    req = generator(c.app, "tts").requests[-1]
    assert req.voice == "echo" and req.speed == 1.0 and req.seconds == 2.0
    r = await c.post("/v1/audio/speech", json={"input": "one two three four five", "speed": 2.0,
                                               "response_format": "flac"})
    assert r.headers["Content-Type"] == "audio/flac"
    samples, _ = soundfile.read(io.BytesIO(await r.read()))
    assert len(samples) == 16000 and generator(c.app, "tts").requests[-1].voice == "alloy"
    r = await c.post("/v1/audio/speech", json={"input": "hi", "response_format": "mp3", "nvext": {"seconds": 1}})
    assert r.headers["Content-Type"] == "audio/mpeg" and len(await r.read()) > 100
    for body, param in (({"input": "hi", "voice": "nova"}, "voice"), ({"input": "hi", "speed": 5}, "speed"),
                        ({"input": "hi", "response_format": "aac"}, "response_format"),
                        ({"input": "hi", "stream_format": "sse"}, "stream_format"),
                        ({"input": "hi", "nvext": {"seconds": 21}}, "nvext.seconds")):
        r = await c.post("/v1/audio/speech", json=body)
        assert r.status == 400 and (await r.json())["error"]["param"] == param, body


async def test_disconnect_stops_the_generator_and_frees_the_slot(make_client):
    c = await make_client(MODELS)
    gen = generator(c.app, "img")
    gen.gate = asyncio.Event()
    task = asyncio.ensure_future(_img(c, nvext={"num_inference_steps": 4}))
    await wait_until(lambda: gen.active == 1, "the request generating")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await wait_until(lambda: gen.active == 0 and gen.closed == 1, "the generator closed")
    gen.gate.set()
    r = await _img(c)
    assert r.status == 200
    text = await (await c.get("/metrics")).text()
    assert 'dynamo_frontend_inflight_requests{model="img"} 0.0' in text


async def test_engine_errors_map_to_statuses(make_client):
    c = await make_client(MODELS)
    gen = generator(c.app, "img")
    gen.fail = EngineError("the prompt broke the pipeline", retryable=False)
    r = await _img(c)
    assert r.status == 500 and "broke the pipeline" in (await r.json())["error"]["message"]
    gen.fail = EngineError("device lost")
    r = await _img(c)
    assert r.status == 503 and r.headers["Retry-After"]


async def test_metrics_and_models_listing(make_client):
    c = await make_client(MODELS)
    await _img(c, n=2, response_format="b64_json")
    text = await (await c.get("/metrics")).text()
    assert 'dynamo_frontend_requests_total{endpoint="images",error_type="",model="img",request_type="unary",' \
           'status="success"} 1.0' in text
    assert 'dynamo_frontend_media_steps_total{model="img"} 2.0' in text
    assert 'dynamo_frontend_media_outputs_total{model="img"} 2.0' in text
    models = {m["id"]: m for m in (await (await c.get("/v1/models")).json())["data"]}
    assert models["img"]["kind"] == "image" and models["tts"]["kind"] == "audio"
    health = await (await c.get("/health")).json()
    assert {m["name"]: m["kind"] for m in health["models"]}["vid"] == "video"
