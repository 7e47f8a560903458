"""Fixtures for the media route tests: the real app, in-process, on a scripted media generator."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import numpy as np
import pytest

from dynamo_mono.engine import EngineArgs, EngineError, LoadMetrics, MediaLimits, ModelCard
from dynamo_mono.hookspecs import hookimpl
from dynamo_mono.media.contract import MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.media.encode import encode_audio, encode_image, encode_video, output_formats
from dynamo_mono.plugins import Plugins
from tests.app_builder import build_test_app

LIMITS = {
    "image": MediaLimits(output_formats=output_formats("image"), max_n=10, default_width=64, default_height=64,
                         max_width=256, max_height=128, size_multiple=8, default_steps=2, max_steps=8,
                         default_guidance_scale=5.0, negative_prompt=True),
    "video": MediaLimits(output_formats=output_formats("video"), default_width=64, default_height=48, max_width=128,
                         max_height=128, default_steps=2, max_steps=8, default_frames=4, max_frames=24,
                         default_fps=8, max_fps=30, input_reference=True),
    "audio": MediaLimits(output_formats=output_formats("audio"), sample_rate=16000, max_seconds=20.0,
                         voices=("alloy", "echo"), speed=True, default_steps=2, max_steps=8),
}


class FakeGenerator:
    """A MediaGenerator that makes tiny deterministic media; `gate` (an asyncio.Event) holds every request after
    its first step until set; `requests` records what it was sent; `active` counts requests in progress."""

    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.kind = args.kind
        self.requests: list[MediaRequest] = []
        self.gate: asyncio.Event | None = None
        self.active = 0
        self.closed = 0
        self.fail: EngineError | None = None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def model_card(self) -> ModelCard:
        return ModelCard(name=self.args.served_model_name, max_model_len=0, block_size=1, kind=self.kind,
                         media=LIMITS[self.kind])

    async def generate_media(self, request: MediaRequest) -> AsyncIterator[MediaProgress | MediaOutput]:
        self.requests.append(request)
        self.active += 1
        try:
            if self.fail is not None:
                raise self.fail
            steps = max(1, request.num_inference_steps)
            for k in range(1, steps + 1):
                yield MediaProgress(k, steps)
                if self.gate is not None:
                    await self.gate.wait()
            files = await asyncio.to_thread(_make, request)
            yield MediaOutput(files, seed=request.seed if request.seed is not None else 7, inference_time_s=0.01,
                              steps=steps)
        finally:
            self.active -= 1
            self.closed += 1

    async def abort(self, request_id: str) -> None:
        pass

    def set_kv_event_sink(self, sink: Any) -> None:
        pass

    def kv_snapshot(self) -> list:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics(running=self.active)]

    def healthy(self) -> bool:
        return True


def _make(req: MediaRequest) -> list:
    seed = req.seed if req.seed is not None else 7
    if req.kind == "image":
        return [encode_image(np.full((req.height, req.width, 3), (seed + i) % 256, np.uint8), req.output_format)
                for i in range(req.n)]
    if req.kind == "video":
        frames = np.zeros((req.num_frames, req.height, req.width, 3), np.uint8)
        return [encode_video(frames, req.fps)]
    n = int(req.seconds * 16000)
    return [encode_audio(np.sin(np.arange(n) * 0.05 * req.speed) * 0.3, 16000, req.output_format)]


class _FakePlugin:
    @hookimpl
    def register_modalities(self, register: Callable[..., None]) -> None:
        for kind in ("image", "video", "audio"):
            register(kind, "fake", FakeGenerator, description="test media generator")


def _plugins() -> Plugins:
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.register_module(_FakePlugin(), "fake-media-generator")
    return plugins


PLUGINS = _plugins()


def generator(app: Any, model: str) -> FakeGenerator:
    from dynamo_mono.http.state import STATE

    return next(iter(app[STATE].models[model].pool.instances.values())).engine


@pytest.fixture
def make_client(aiohttp_client: Any, tmp_path: Any) -> Callable[..., Any]:
    """make_client(**options): a test client of an app serving the `--config` models given as `models=[...]`."""

    async def make(models: list[dict], **options: Any) -> Any:
        import yaml

        cfg = tmp_path / "models.yaml"
        cfg.write_text(yaml.safe_dump(models))
        app = await build_test_app(PLUGINS, {"config": str(cfg), **options})
        return await aiohttp_client(app)

    return make


MODELS = [{"name": "img", "engine": "fake", "kind": "image"}, {"name": "vid", "engine": "fake", "kind": "video"},
          {"name": "tts", "engine": "fake", "kind": "audio"}, {"name": "tiny-chatml", "engine": "mocker"}]
