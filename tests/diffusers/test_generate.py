"""The diffusers generator on tiny random pipelines: images, video and audio of the asked shape, seeds, batches,
progress, and the one worker slot (queue by priority, cancellation, abort, stop, failures)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
import pytest

from dynamo_mono.engine import EngineError
from dynamo_mono.media.contract import MediaGenerator, MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.serving.errors import InvalidRequest
from tests.diffusers.conftest import Gate, until

pytestmark = pytest.mark.timeout(120)


def image_req(rid: str = "img", size: tuple[int, int] = (64, 64), steps: int = 2, **kw: Any) -> MediaRequest:
    kw.setdefault("seed", 7)
    kw.setdefault("output_format", "png")
    return MediaRequest(rid, "image", kw.pop("prompt", "a red fox"), width=size[0], height=size[1],
                        num_inference_steps=steps, **kw)


def video_req(rid: str = "vid", size: int = 32, frames: int = 4, fps: int = 8, **kw: Any) -> MediaRequest:
    kw.setdefault("seed", 7)
    kw.setdefault("num_inference_steps", 2)
    return MediaRequest(rid, "video", "waves", "mp4", width=size, height=size, num_frames=frames, fps=fps, **kw)


def audio_req(rid: str = "aud", seconds: float = 0.5, **kw: Any) -> MediaRequest:
    kw.setdefault("seed", 7)
    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("output_format", "wav")
    return MediaRequest(rid, "audio", "rain on a roof", seconds=seconds, **kw)


async def run(gen: Any, request: MediaRequest) -> tuple[list[MediaProgress], MediaOutput]:
    events = [e async for e in gen.generate_media(request)]
    assert isinstance(events[-1], MediaOutput)
    assert all(isinstance(e, MediaProgress) for e in events[:-1])
    return events[:-1], events[-1]


async def output(gen: Any, request: MediaRequest) -> MediaOutput:
    return (await run(gen, request))[1]


def pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def video_frames(data: bytes) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) of an MP4."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


# -- images --


async def test_images_of_the_asked_size_and_count(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    assert isinstance(gen, MediaGenerator)
    progress, out = await run(gen, image_req(size=(48, 32), n=3))
    assert len(out.files) == 3 and out.seed == 7 and out.steps == 2
    assert {(f.content_type, f.extension) for f in out.files} == {("image/png", "png")}
    images = [pixels(f.data) for f in out.files]
    assert all(img.shape == (32, 48, 3) for img in images)
    assert len({f.data for f in out.files}) == 3  # output i comes from seed + i
    assert [(p.step, p.total_steps) for p in progress] == [(1, 2), (2, 2)]  # one batched call for the 3
    assert out.inference_time_s > 0 and set(out.extra) == {"pipeline_s", "encode_s"}
    jpeg = await output(gen, image_req(output_format="jpeg"))
    assert jpeg.files[0].content_type == "image/jpeg" and jpeg.files[0].data[:2] == b"\xff\xd8"


async def test_same_seed_same_bytes_and_output_i_is_seed_plus_i(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    first = await output(gen, image_req(seed=11, n=2))
    again = await output(gen, image_req(seed=11, n=2))
    assert [f.data for f in first.files] == [f.data for f in again.files]
    other = await output(gen, image_req(seed=12))
    assert other.files[0].data != first.files[0].data
    # seed 12 alone is output 1 of the seed-11 batch (up to batched float rounding)
    assert np.abs(pixels(other.files[0].data) - pixels(first.files[1].data)).max() <= 2


async def test_a_request_without_seed_reports_the_one_it_used(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    out = await output(gen, image_req(seed=None))
    assert isinstance(out.seed, int)
    assert (await output(gen, image_req(seed=out.seed))).files[0].data == out.files[0].data


async def test_negative_prompt_and_guidance_act(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    card = gen.model_card()
    assert card.kind == "image" and card.media.negative_prompt and card.media.default_guidance_scale == 7.5
    plain = await output(gen, image_req())
    negative = await output(gen, image_req(negative_prompt="blurry"))
    weak = await output(gen, image_req(guidance_scale=2.0))
    assert len({plain.files[0].data, negative.files[0].data, weak.files[0].data}) == 3
    with pytest.raises(InvalidRequest, match="guidance_scale > 1"):
        await output(gen, image_req(negative_prompt="blurry", guidance_scale=1.0))


async def test_flux_sizes_and_no_negative_prompt(started, tiny) -> None:
    gen = await started(tiny["flux"], "image")
    media = gen.model_card().media
    # Flux packs 2x2 latent patches; its negative prompt needs true_cfg_scale, which no request field sets.
    assert media.size_multiple == 16 and not media.negative_prompt and media.default_guidance_scale == 3.5
    assert media.default_steps == 28
    out = await output(gen, image_req(size=(32, 48), n=2))
    assert [pixels(f.data).shape for f in out.files] == [(48, 32, 3)] * 2
    with pytest.raises(InvalidRequest, match="negative_prompt"):
        await output(gen, image_req(size=(32, 32), negative_prompt="x"))


async def test_a_pipeline_refusing_the_inputs_is_a_non_retryable_engine_error(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    with pytest.raises(EngineError, match="StableDiffusionPipeline failed: ValueError") as err:
        await output(gen, image_req(size=(60, 64)))  # the server refuses it by size_multiple; the pipeline too
    assert not err.value.retryable
    assert gen.healthy() and (await output(gen, image_req())).files  # the slot is free again


# -- video --


async def test_text_to_video_frames_size_and_fps(started, tiny) -> None:
    gen = await started(tiny["text-to-video-sd"], "video")
    media = gen.model_card().media
    assert (media.default_width, media.default_height, media.default_frames) == (32, 32, 16)
    assert media.default_fps == 16 and not media.input_reference
    progress, out = await run(gen, video_req(frames=5, fps=12))
    assert out.files[0].content_type == "video/mp4"
    assert video_frames(out.files[0].data) == (5, 32, 32, 12.0)
    assert len(progress) == 2  # the legacy step callback


async def test_wan_makes_4k_plus_1_frames(started, tiny) -> None:
    gen = await started(tiny["wan"], "video")
    media = gen.model_card().media
    assert media.size_multiple == 16 and media.default_frames == 81 and (media.default_width, media.default_height) \
        == (832, 480)
    out = await output(gen, video_req(frames=5, size=32))
    assert video_frames(out.files[0].data)[:3] == (5, 32, 32)
    with pytest.raises(InvalidRequest, match="4k\\+1 frames") as err:
        await output(gen, video_req(frames=6, size=32))
    assert err.value.param == "nvext.num_frames"


async def test_image_to_video_takes_and_needs_input_reference(started, tiny) -> None:
    from PIL import Image

    gen = await started(tiny["wan-i2v"], "video")
    assert gen.model_card().media.input_reference
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 30, 30)).save(buf, format="PNG")
    out = await output(gen, video_req(frames=5, input_reference=buf.getvalue()))
    assert video_frames(out.files[0].data)[:3] == (5, 32, 32)
    with pytest.raises(InvalidRequest, match="input_reference is required"):
        await output(gen, video_req(frames=5))
    with pytest.raises(InvalidRequest, match="not an image"):
        await output(gen, video_req(frames=5, input_reference=b"not a picture"))
    assert gen.healthy() and gen.load_metrics()[0].running == 0


async def test_text_to_video_refuses_input_reference(started, tiny) -> None:
    gen = await started(tiny["text-to-video-sd"], "video")
    with pytest.raises(InvalidRequest, match="takes no input_reference"):
        await output(gen, video_req(input_reference=b"\x89PNG"))


# -- audio --


async def test_audio_of_the_asked_length(started, tiny) -> None:
    import soundfile

    gen = await started(tiny["audioldm"], "audio")
    media = gen.model_card().media
    assert media.sample_rate == 16000 and media.voices == ("default",) and not media.speed
    assert media.default_guidance_scale == 2.5 and media.negative_prompt and media.default_steps == 10
    assert "opus" in media.output_formats and "wav" in media.output_formats
    progress, out = await run(gen, audio_req(seconds=0.5))
    samples, rate = soundfile.read(io.BytesIO(out.files[0].data))
    assert rate == 16000 and len(samples) == 8000 and out.files[0].content_type == "audio/wav"
    assert len(progress) == 2
    flac = await output(gen, audio_req(seconds=0.25, output_format="flac"))
    assert soundfile.info(io.BytesIO(flac.files[0].data)).frames == 4000
    same = await output(gen, audio_req(seconds=0.5))
    assert same.files[0].data == out.files[0].data


# -- the one worker slot --


async def test_progress_counts_every_step(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    progress, out = await run(gen, image_req(steps=5))
    assert [(p.step, p.total_steps) for p in progress] == [(i, 5) for i in range(1, 6)] and out.steps == 5


async def test_queue_runs_one_at_a_time_by_priority_then_arrival(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")
    assert gen.model_card().supports_priority and not gen.model_card().priority_higher_is_urgent
    gate = Gate(gen.pipeline)
    done: list[str] = []

    async def go(rid: str, priority: int) -> None:
        await output(gen, image_req(rid, priority=priority))
        done.append(rid)

    first = asyncio.create_task(go("first", 0))
    await gate.wait_entered()
    later = [asyncio.create_task(go(rid, prio)) for rid, prio in (("low", 5), ("urgent", -1), ("normal", 0))]
    await until(lambda: gen.load_metrics()[0].waiting == 3, "3 waiting")
    assert gen.load_metrics()[0].running == 1
    gate.release()
    await asyncio.gather(first, *later)
    assert done == ["first", "urgent", "normal", "low"]
    m = gen.load_metrics()[0]
    assert (m.running, m.waiting) == (0, 0)


async def test_closing_a_running_request_stops_it_at_the_next_step(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image", max_num_inference_steps=200)
    gate = Gate(gen.pipeline, block_at=2)  # hold the second denoising step
    it = gen.generate_media(image_req("long", steps=200))
    assert isinstance(await it.__anext__(), MediaProgress)  # step 1 done
    await gate.wait_entered()
    await it.aclose()  # the client went away during step 2
    gate.release()
    await output(gen, image_req("next", steps=2))
    assert gate.calls == 2 + 2  # the long request ran no step after the one it was in
    m = gen.load_metrics()[0]
    assert (m.running, m.waiting) == (0, 0)


async def test_cancelling_the_consumer_frees_the_slot_and_the_queue(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image", max_num_inference_steps=200)
    gate = Gate(gen.pipeline)
    running = asyncio.create_task(output(gen, image_req("running", steps=200)))
    await gate.wait_entered()
    waiting = asyncio.create_task(output(gen, image_req("waiting")))
    await until(lambda: gen.load_metrics()[0].waiting == 1, "one waiting")
    waiting.cancel()
    await until(lambda: gen.load_metrics()[0].waiting == 0, "the cancelled request out of the queue")
    running.cancel()
    gate.release()
    await output(gen, image_req("after"))
    assert gate.calls == 1 + 2
    assert running.cancelled() and waiting.cancelled()


async def test_abort_running_and_waiting(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image", max_num_inference_steps=200)
    gate = Gate(gen.pipeline)
    running = asyncio.create_task(output(gen, image_req("running", steps=200)))
    await gate.wait_entered()
    waiting = asyncio.create_task(output(gen, image_req("waiting")))
    await until(lambda: gen.load_metrics()[0].waiting == 1, "one waiting")
    await gen.abort("waiting")
    with pytest.raises(EngineError, match="waiting was aborted"):
        await waiting
    await gen.abort("running")
    gate.release()
    with pytest.raises(EngineError, match="running was aborted") as err:
        await running
    assert not err.value.retryable and gate.calls == 1
    await gen.abort("unknown")  # nothing to do
    assert gen.load_metrics()[0].running == 0


async def test_stop_ends_waiting_requests_and_the_running_one(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image", max_num_inference_steps=200)
    gate = Gate(gen.pipeline)
    running = asyncio.create_task(output(gen, image_req("running", steps=200)))
    await gate.wait_entered()
    waiting = asyncio.create_task(output(gen, image_req("waiting")))
    await until(lambda: gen.load_metrics()[0].waiting == 1, "one waiting")
    stopping = asyncio.create_task(gen.stop())
    await until(lambda: not gen.healthy(), "stopping")
    gate.release()
    await stopping
    for task in (running, waiting):
        with pytest.raises(EngineError):
            await task
    with pytest.raises(EngineError, match="not serving") as err:
        await output(gen, image_req())
    assert err.value.retryable


async def test_a_device_fault_makes_the_instance_unhealthy(started, tiny) -> None:
    gen = await started(tiny["stable-diffusion"], "image")

    def fault(module: Any, args: Any) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    handle = gen.pipeline.unet.register_forward_pre_hook(fault)
    with pytest.raises(EngineError, match="failed on its device") as err:
        await output(gen, image_req())
    handle.remove()
    assert err.value.retryable and not gen.healthy()
    with pytest.raises(EngineError, match="not serving"):
        await output(gen, image_req())


def test_failure_classes() -> None:
    import torch

    from dynamo_mono_diffusers.runner import DeviceFault, classify_failure

    oom = classify_failure("P", torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not oom.retryable and "ran out of memory" in str(oom)
    cpu_oom = classify_failure("P", RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    assert not cpu_oom.retryable and "ran out of memory" in str(cpu_oom)
    fault = classify_failure("P", RuntimeError("CUDA error: device-side assert triggered\nmore"))
    assert isinstance(fault, DeviceFault) and fault.retryable and "more" not in str(fault)
    bad = classify_failure("P", ValueError("`height` has to be divisible by 8"))
    assert not bad.retryable and str(bad) == "P failed: ValueError: `height` has to be divisible by 8"


async def test_long_jobs_log_their_progress(started, tiny, monkeypatch, caplog) -> None:
    import dynamo_mono_diffusers.runner as runner

    gen = await started(tiny["stable-diffusion"], "image")
    monkeypatch.setattr(runner, "PROGRESS_LOG_INTERVAL_S", 0.0)  # every step counts as "10 s later"
    with caplog.at_level("INFO", logger="dynamo_mono.diffusers"):
        await output(gen, image_req("slow", steps=3))
    lines = [r.getMessage() for r in caplog.records if "slow: step" in r.getMessage()]
    assert [line.split(" after ")[0] for line in lines] == [f"request slow: step {i}/3" for i in (1, 2, 3)]
