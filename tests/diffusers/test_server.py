"""A real server (`serve --config`) with diffusers image, video and audio models, driven over HTTP: the plugin
through its entry point, the card's limits enforced by the server, and the files that come back."""

from __future__ import annotations

import base64
import importlib.metadata
import io

import aiohttp
import pytest

from conformance.server import ServerProcess, metric_value, start_server
from conformance.waits import metrics_text

pytestmark = pytest.mark.timeout(180)

if not any(ep.name == "diffusers" for ep in importlib.metadata.entry_points(group="dynamo_mono")):
    pytest.skip("the dynamo-mono-diffusers plugin is not installed (pip install -e plugins/diffusers)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory: pytest.TempPathFactory):
    cfg = tmp_path_factory.mktemp("diffusers-server") / "models.yaml"
    cfg.write_text(
        f"- {{name: painter, engine: diffusers, kind: image, model: '{tiny['stable-diffusion']}', "
        "options: {device: cpu, default_num_inference_steps: 2}}\n"
        f"- {{name: filmer, engine: diffusers, kind: video, model: '{tiny['text-to-video-sd']}', "
        "options: {default_num_inference_steps: 2, default_num_frames: 4, default_fps: 8}}\n"
        f"- {{name: sounds, engine: diffusers, kind: audio, model: '{tiny['audioldm']}', "
        "options: {default_num_inference_steps: 2, default_audio_seconds: 0.5, max_audio_seconds: 2}}\n")
    srv = start_server(["--config", str(cfg)], env={"OMP_NUM_THREADS": "1"}, timeout=120)
    yield srv
    srv.stop()


async def post(srv: ServerProcess, route: str, body: dict) -> tuple[int, dict | bytes]:
    async with aiohttp.ClientSession() as s, s.post(srv.url + route, json=body) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.read()


async def test_images(server: ServerProcess) -> None:
    from PIL import Image

    body = {"model": "painter", "prompt": "a lighthouse", "size": "64x32", "n": 2, "response_format": "b64_json",
            "nvext": {"seed": 5}}
    status, out = await post(server, "/v1/images/generations", body)
    assert status == 200, out
    images = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in out["data"]]
    assert [(im.format, im.size) for im in images] == [("PNG", (64, 32))] * 2
    again = await post(server, "/v1/images/generations", body)
    assert again[1]["data"] == out["data"]
    text = await metrics_text(server.url)
    assert metric_value(text, "dynamo_frontend_media_steps_total", {"model": "painter"}) == 4  # 2 steps x 2 calls


@pytest.mark.parametrize("body, param", [
    ({"size": "60x64"}, "size"),  # not a multiple of the pipeline's 8
    ({"size": "2048x64"}, "size"),
    ({"nvext": {"num_inference_steps": 51}}, "nvext.num_inference_steps"),
    ({"n": 11}, "n"),
    ({"nvext": {"negative_prompt": "fog", "guidance_scale": 1.0}}, "nvext.negative_prompt"),
])
async def test_image_requests_outside_the_pipeline_are_400(server: ServerProcess, body: dict, param: str) -> None:
    status, out = await post(server, "/v1/images/generations", {"model": "painter", "prompt": "x", **body})
    assert status == 400 and out["error"]["param"] == param, out


async def test_video(server: ServerProcess) -> None:
    import av

    status, out = await post(server, "/v1/videos", {"model": "filmer", "prompt": "clouds", "size": "32x32",
                                                    "response_format": "b64_json"})
    assert status == 200, out
    with av.open(io.BytesIO(base64.b64decode(out["data"][0]["b64_json"]))) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert float(stream.average_rate) == 8
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (32, 32)
    status, out = await post(server, "/v1/videos", {"model": "filmer", "prompt": "x", "size": "32x32",
                                                    "input_reference": "data:image/png;base64,iVBORw0KGgo="})
    assert status == 400 and out["error"]["param"] == "input_reference", out


async def test_speech(server: ServerProcess) -> None:
    import soundfile

    status, out = await post(server, "/v1/audio/speech", {"model": "sounds", "input": "rain on a roof",
                                                          "voice": "default", "response_format": "wav"})
    assert status == 200, out
    samples, rate = soundfile.read(io.BytesIO(out))
    assert rate == 16000 and len(samples) == 8000
    status, out = await post(server, "/v1/audio/speech", {"model": "sounds", "input": "rain", "voice": "alloy"})
    assert status == 400 and out["error"]["param"] == "voice", out
    status, out = await post(server, "/v1/audio/speech", {"model": "sounds", "input": "rain", "voice": "default",
                                                          "speed": 2.0})
    assert status == 400 and out["error"]["param"] == "speed", out
