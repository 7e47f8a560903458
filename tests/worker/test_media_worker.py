"""Media generators as remote workers: a fake MediaGenerator behind a real Worker and WorkerRegistry, driven
through the server's RemoteEngine (progress, chunked results, errors, cancellation, registration)."""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest

from conformance.waits import wait_until

from dynamo_mono.config import resolve
from dynamo_mono.engine import EngineError, LoadMetrics, MediaLimits, ModelCard
from dynamo_mono.media.contract import MediaFile, MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.transports import messages as m
from dynamo_mono.worker.model_files import unpack_model_files
from dynamo_mono.worker.plugin import worker_options
from dynamo_mono.worker.process import Worker
from dynamo_mono.worker.registry import WorkerRegistry

pytestmark = pytest.mark.timeout(60)

MODEL = "fake-video"
LIMITS = MediaLimits(output_formats=("mp4",), max_n=2, default_width=64, default_height=64, max_width=256,
                     max_height=256, default_steps=4, max_steps=50, default_frames=8, max_frames=16, default_fps=8,
                     max_fps=24, input_reference=True)
STEPS = 3


class FakeGenerator:
    """A MediaGenerator whose outputs and failures the test picks by prompt; records what it saw and how each
    request's generator ended."""

    def __init__(self, limits: MediaLimits = LIMITS) -> None:
        self.limits = limits
        self.files: list[MediaFile] = []
        self.requests: list[MediaRequest] = []
        self.ended: dict[str, str] = {}  # request_id -> "done" | "closed"
        self.blocked = asyncio.Event()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def model_card(self) -> ModelCard:
        return ModelCard(MODEL, 0, 1, kind="video", media=self.limits)

    async def generate_media(self, request: MediaRequest):
        self.requests.append(request)
        if request.prompt == "refuse":
            raise EngineError("the prompt cannot be rendered", retryable=False)
        if request.prompt == "crash":
            raise RuntimeError("device lost")
        outcome = "closed"
        try:
            for step in range(1, STEPS + 1):
                yield MediaProgress(step, STEPS)
                if request.prompt == "block":  # hold the request until the consumer goes away
                    self.blocked.set()
                    await asyncio.Event().wait()
            outcome = "done"
            yield MediaOutput(list(self.files), seed=request.seed, inference_time_s=1.5, steps=STEPS,
                              extra={"denoise_s": 1.25})
        finally:
            self.ended[request.request_id] = outcome

    async def abort(self, request_id: str) -> None:
        return None

    def set_kv_event_sink(self, sink) -> None:
        return None

    def kv_snapshot(self) -> list:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics()]

    def healthy(self) -> bool:
        return True


def _worker(port: int, gen: FakeGenerator, name: str = "media-worker") -> Worker:
    """A real Worker (its connection, read loop and media task) hosting gen, as `worker --model-kind video`
    would after start_engines."""
    from dynamo_mono.plugins import get_plugins

    plugins = get_plugins()
    settings = resolve(worker_options(plugins), {"connect": f"tcp://127.0.0.1:{port}", "worker_token": "t",
                                                 "worker_name": name, "connect_backoff_max": 0.3}, env={})
    w = Worker(settings, plugins)
    w.engines = [gen]
    w.model = MODEL
    w.model_files = m.ModelFiles(kind="video", files={}, chat_template=None, max_model_len=0)
    return w


@asynccontextmanager
async def _joined(state, gen: FakeGenerator):
    """A registry with one worker hosting gen; yields (registry, worker, the server's RemoteEngine for it)."""
    reg = WorkerRegistry(state, token="t", host="127.0.0.1")
    port = await reg.start()
    worker = _worker(port, gen)
    run = asyncio.create_task(worker.run())
    try:
        model = await wait_until(lambda: state.models.get(MODEL), "the worker's model to be served")
        inst = await wait_until(lambda: next(iter(model.pool.instances.values()), None), "the worker's instance")
        yield reg, worker, inst.engine
    finally:
        worker.stopping.set()
        assert await asyncio.wait_for(run, 10) == 0
        await reg.stop()


def _request(rid: str, prompt: str = "a cat", **kw) -> MediaRequest:
    return MediaRequest(rid, "video", prompt, "mp4", seed=7, width=64, height=64, num_inference_steps=STEPS,
                        num_frames=8, fps=8, model=MODEL, **kw)


async def test_progress_then_multi_chunk_result_reassembled_byte_exact(remote_only_state):
    gen = FakeGenerator()
    rnd = random.Random(15)
    gen.files = [MediaFile(rnd.randbytes(5 * 1024 * 1024 + 123), "video/mp4", "mp4"),
                 MediaFile(b"tiny", "video/mp4", "mp4")]
    async with _joined(remote_only_state, gen) as (_, _, engine):
        got = [item async for item in engine.generate_media(_request("r1", input_reference=b"\x89PNG ref"))]
        assert got[:-1] == [MediaProgress(s, STEPS) for s in range(1, STEPS + 1)]
        assert got[-1] == MediaOutput(gen.files, seed=7, inference_time_s=1.5, steps=STEPS,
                                      extra={"denoise_s": 1.25})
        assert gen.requests[0] == _request("r1", input_reference=b"\x89PNG ref")  # every field crossed


async def test_result_larger_than_a_frame_crosses_in_chunks(remote_only_state):
    """A 40 MB video result with the default 16 MiB frame limit on both sides."""
    gen = FakeGenerator()
    gen.files = [MediaFile(random.Random(40).randbytes(40_000_000), "video/mp4", "mp4")]
    assert len(gen.files[0].data) > m.MEDIA_CHUNK_BYTES * 16
    async with _joined(remote_only_state, gen) as (_, _, engine):
        *_, out = [item async for item in engine.generate_media(_request("big"))]
        assert out.files[0].data == gen.files[0].data


async def test_engine_errors_keep_their_retryable_flag(remote_only_state):
    gen = FakeGenerator()
    async with _joined(remote_only_state, gen) as (_, _, engine):
        with pytest.raises(EngineError, match="cannot be rendered") as ei:
            async for _ in engine.generate_media(_request("r1", "refuse")):
                pass
        assert ei.value.retryable is False
        with pytest.raises(EngineError, match="RuntimeError: device lost") as ei:
            async for _ in engine.generate_media(_request("r2", "crash")):
                pass
        assert ei.value.retryable is True


async def test_cancelling_the_consumer_closes_the_workers_generator(remote_only_state):
    gen = FakeGenerator()
    async with _joined(remote_only_state, gen) as (_, worker, engine):
        first = asyncio.Event()

        async def consume():
            async for _ in engine.generate_media(_request("r1", "block")):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        await gen.blocked.wait()
        task.cancel()
        await wait_until(lambda: gen.ended.get("r1"), "the worker's generator to end")
        assert gen.ended["r1"] == "closed"  # stopped mid-way, not run to its end
        await wait_until(lambda: not worker.tasks, "the worker's media task to end")
        # the connection is still good for the next request
        *_, out = [item async for item in engine.generate_media(_request("r2"))]
        assert out.files == [] and gen.ended["r2"] == "done"


def test_media_card_and_request_round_trip_on_the_wire():
    card = ModelCard(MODEL, 0, 1, kind="audio", media=MediaLimits(("wav", "flac"), sample_rate=24000,
                                                                  max_seconds=30.0, voices=("alloy", "echo"),
                                                                  speed=True))
    got = m.decode(m.encode(m.Register("t", MODEL, [card], [[]]))).cards[0]
    assert got == card and isinstance(got.media, MediaLimits) and got.media.voices == ("alloy", "echo")
    req = _request("r1", input_reference=bytes(range(256)), negative_prompt="blurry", guidance_scale=3.5)
    assert m.decode(m.encode(m.GenerateMedia(4, 0, req))).request == req


async def test_worker_media_model_is_served_and_mismatching_limits_refused(remote_only_state, caplog):
    caplog.set_level(logging.ERROR, logger="dynamo_mono.worker")
    state = remote_only_state
    async with _joined(state, FakeGenerator()) as (reg, _, engine):
        model = state.models[MODEL]
        assert model.kind == "video" and not model.configured and model.tokenizer is None
        (inst,) = model.pool.instances.values()
        assert not inst.local and inst.card.media == LIMITS and engine.healthy()
        other = _worker(reg.port, FakeGenerator(replace(LIMITS, max_n=4)), name="other")
        assert await asyncio.wait_for(other.run(), 10) == 2  # refused: not retried
        assert "video limits max_n=4 (not 2) differ from those of the other instances" in caplog.text
        assert len(model.pool.instances) == 1
    await wait_until(lambda: MODEL not in state.models, "the model to leave with its worker")


def test_media_model_files_carry_no_tokenizer():
    info = unpack_model_files(m.ModelFiles("image", {}, None, 0), "img")
    assert info.name == "img" and info.tokenizer is None and info.max_model_len == 0
    with pytest.raises(ValueError, match="takes no tokenizer files"):
        unpack_model_files(m.ModelFiles("image", {"tokenizer.json": b"{}"}, None, 0), "img")
