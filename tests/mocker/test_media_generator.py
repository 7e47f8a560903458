"""The mocker's media generators: deterministic content, sizes / frames / durations, steps, the one slot, timing."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
import types
from typing import Any

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

import mocker.media
from dynamo_mono.config import ConfigError
from dynamo_mono.engine import EngineArgs, EngineError
from dynamo_mono.media.contract import MediaGenerator, MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.media.encode import output_formats
from dynamo_mono.plugins import Plugins
from mocker.media import MockerMediaGenerator, create_media_generator, decode_reference
from mocker.options import MOCKER_MEDIA_OPTIONS
from tests.mocker.conftest import VirtualClock, _Asyncio

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """The media generator's step sleeps and timers run on a VirtualClock."""
    vc = VirtualClock()
    monkeypatch.setattr(mocker.media, "time", types.SimpleNamespace(perf_counter=vc.read, monotonic=vc.read,
                                                                    time=time.time))
    monkeypatch.setattr(mocker.media, "asyncio", _Asyncio(vc))
    return vc


def media_args(kind: str, **options: Any) -> EngineArgs:
    opts: dict[str, Any] = {"speedup_ratio": 0.0}
    opts.update(options)
    return EngineArgs(model_path="placeholder-no-files", served_model_name="pics", instance_id=1, max_model_len=0,
                      eos_token_ids=[], vocab_size=0, options=opts, kind=kind)


def generator(kind: str, **options: Any) -> MockerMediaGenerator:
    return create_media_generator(media_args(kind, **options))


def image_req(rid: str = "r", size: int = 64, steps: int = 3, **kw: Any) -> MediaRequest:
    kw.setdefault("seed", 7)
    return MediaRequest(rid, "image", "a red fox", "png", width=size, height=size, num_inference_steps=steps, **kw)


def video_req(rid: str = "v", size: int = 64, frames: int = 8, fps: int = 8, **kw: Any) -> MediaRequest:
    kw.setdefault("seed", 7)
    kw.setdefault("num_inference_steps", 2)
    return MediaRequest(rid, "video", "waves", "mp4", width=size, height=size, num_frames=frames, fps=fps, **kw)


def audio_req(rid: str = "a", seconds: float = 0.5, **kw: Any) -> MediaRequest:
    kw.setdefault("seed", 7)
    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("output_format", "wav")
    kw.setdefault("prompt", "hello there")
    return MediaRequest(rid, "audio", seconds=seconds, **kw)


async def run(gen: MockerMediaGenerator, request: MediaRequest) -> tuple[list[MediaProgress], MediaOutput]:
    events = [e async for e in gen.generate_media(request)]
    assert isinstance(events[-1], MediaOutput)
    return events[:-1], events[-1]


async def output(gen: MockerMediaGenerator, request: MediaRequest) -> MediaOutput:
    return (await run(gen, request))[1]


async def until(cond: Any) -> None:
    """Wait for a state (event-loop turns, not time); the loop bound only guards against a hang."""
    for _ in range(100_000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("state not reached")


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def video_frames(data: bytes) -> tuple[list[np.ndarray], Any]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], rate


# --- cards and options ---------------------------------------------------------------------------------------------
def test_cards_carry_the_limits_of_the_options() -> None:
    img = generator("image", max_image_size=768, default_image_size="256x128", max_num_inference_steps=40,
                    default_num_inference_steps=10).model_card()
    assert isinstance(generator("image"), MediaGenerator)
    assert (img.name, img.kind, img.max_model_len, img.block_size) == ("pics", "image", 0, 1)
    m = img.media
    assert (m.max_width, m.max_height, m.default_width, m.default_height) == (768, 768, 256, 128)
    assert (m.default_steps, m.max_steps, m.max_n, m.size_multiple) == (10, 40, 10, 8)
    assert m.output_formats == output_formats("image") and m.negative_prompt and m.default_guidance_scale == 7.5
    assert not m.input_reference and m.sample_rate == 0

    vid = generator("video", max_num_frames=40, default_num_frames=12, default_fps=6, max_fps=12).model_card().media
    assert (vid.default_width, vid.default_height, vid.max_n) == (512, 288, 1)
    assert (vid.default_frames, vid.max_frames, vid.default_fps, vid.max_fps, vid.input_reference) == (12, 40, 6, 12,
                                                                                                          True)
    aud = generator("audio", max_audio_seconds=30.0).model_card().media
    assert (aud.sample_rate, aud.max_seconds, aud.max_n, aud.speed) == (24000, 30.0, 1, True)
    assert aud.voices[0] == "alloy" and len(set(aud.voices)) == len(aud.voices) > 5
    assert aud.output_formats == output_formats("audio") and not aud.negative_prompt


@pytest.mark.parametrize(("kind", "options", "fragment"), [
    ("image", {"max_num_frames": 10}, "--max-num-frames=10 does not apply to the mocker's image models"),
    ("audio", {"max_image_size": 512}, "--max-image-size=512 does not apply to the mocker's audio models"),
    ("video", {"max_audio_seconds": 5.0}, "--max-audio-seconds=5.0 does not apply"),
    ("image", {"max_image_size": 100}, "--max-image-size=100 must be a multiple of 8"),
    ("image", {"default_image_size": "big"}, "must be WIDTHxHEIGHT"),
    ("image", {"default_image_size": "2048x64"}, "of at most --max-image-size=1024"),
    ("image", {"default_image_size": "100x64"}, "multiples of 8"),
    ("image", {"default_num_inference_steps": 60}, "must be <= --max-num-inference-steps=50"),
    ("video", {"default_num_frames": 200}, "--default-num-frames=200 must be <= --max-num-frames=96"),
    ("video", {"default_fps": 31}, "--default-fps=31 must be <= --max-fps=30"),
    ("chat", {}, "not 'chat'"),
])
def test_bad_options_are_refused_at_startup(kind: str, options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        generator(kind, **options)
    assert fragment in str(e.value)


def test_a_small_max_size_shrinks_the_default_size() -> None:
    card = generator("video", max_image_size=256).model_card().media
    assert (card.default_width, card.default_height, card.max_width) == (256, 256, 256)


def test_the_plugin_registers_every_media_kind_with_the_media_options() -> None:
    import mocker.plugin

    p = Plugins()
    p.register_module(mocker.plugin, "mocker")
    for kind in ("image", "video", "audio"):
        reg = p.modality(kind, "mocker")
        assert reg.factory is create_media_generator and reg.options == MOCKER_MEDIA_OPTIONS and reg.description
    assert p.get("engine", "mocker").kinds == ("chat", "embedding")
    names = [o.name for o in MOCKER_MEDIA_OPTIONS]
    assert len(names) == len(set(names)) and "speedup_ratio" in names and "max_image_size" in names


# --- images ---------------------------------------------------------------------------------------------------------
async def test_images_are_deterministic_per_seed_and_exactly_sized() -> None:
    gen = generator("image")
    a = await output(gen, image_req(size=64, seed=3))
    b = await output(gen, image_req(size=64, seed=3))
    c = await output(gen, image_req(size=64, seed=4))
    assert a.files[0].data == b.files[0].data and a.files[0].data != c.files[0].data
    assert (a.seed, c.seed, a.files[0].content_type, a.files[0].extension) == (3, 4, "image/png", "png")
    wide = await output(gen, dataclasses.replace(image_req(seed=3), width=96, height=40))
    img = pixels(wide.files[0].data)
    assert img.shape == (40, 96, 3)
    assert img.std() > 10 and len(np.unique(img.reshape(-1, 3), axis=0)) > 100  # a colourful picture, not a fill


async def test_every_value_that_shapes_an_image_changes_it() -> None:
    gen = generator("image")
    base = image_req(seed=1)
    ref = (await output(gen, base)).files[0].data
    for change in ({"prompt": "a blue fox"}, {"num_inference_steps": 4}, {"negative_prompt": "blurry"},
                   {"guidance_scale": 3.0}):
        assert (await output(gen, dataclasses.replace(base, **change))).files[0].data != ref, change
    # guidance_scale None is the card's default
    assert (await output(gen, dataclasses.replace(base, guidance_scale=7.5))).files[0].data == ref


async def test_n_images_are_made_with_seed_plus_i() -> None:
    gen = generator("image")
    many = await output(gen, image_req(size=32, seed=10, n=3))
    assert len(many.files) == 3 and many.seed == 10 and len({f.data for f in many.files}) == 3
    for i, f in enumerate(many.files):
        assert f.data == (await output(gen, image_req(size=32, seed=10 + i))).files[0].data
        assert pixels(f.data).shape == (32, 32, 3)


async def test_no_seed_picks_one_and_reports_it() -> None:
    gen = generator("image")
    first = await output(gen, image_req(size=32, seed=None))
    assert isinstance(first.seed, int)
    again = await output(gen, image_req(size=32, seed=first.seed))
    assert again.files[0].data == first.files[0].data


async def test_other_image_formats() -> None:
    gen = generator("image")
    out = await output(gen, dataclasses.replace(image_req(size=48), output_format="jpeg"))
    assert out.files[0].content_type == "image/jpeg" and pixels(out.files[0].data).shape == (48, 48, 3)


# --- video ----------------------------------------------------------------------------------------------------------
async def test_video_has_the_frames_and_rate_asked_and_moves() -> None:
    gen = generator("video")
    # 128 pixels, not 64: libx264 (veryfast, CRF) is not byte-reproducible on frames this tiny (a few % of encodes
    # of 64x64 frames differ), while the rendered frames always are.
    request = video_req(size=128, frames=10, fps=5)
    out = await output(gen, request)
    assert (out.files[0].content_type, out.files[0].extension, out.seed) == ("video/mp4", "mp4", 7)
    frames, rate = video_frames(out.files[0].data)
    assert len(frames) == 10 and rate == 5 and frames[0].shape == (128, 128, 3)
    diffs = [np.abs(frames[i + 1].astype(int) - frames[i].astype(int)).mean() for i in range(9)]
    assert min(diffs) > 1.0  # every frame moves
    assert (await output(gen, request)).files[0].data == out.files[0].data
    assert (await output(gen, dataclasses.replace(request, seed=8))).files[0].data != out.files[0].data
    rendered = mocker.media.render_video(request, 7, None)
    np.testing.assert_array_equal(np.stack(rendered), np.stack(mocker.media.render_video(request, 7, None)))


async def test_video_from_a_reference_starts_at_it_and_drifts_away() -> None:
    yy, xx = np.mgrid[0:60, 0:100]
    picture = np.stack([xx * 2.5, yy * 4.0, np.full_like(xx, 40)], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    reference = decode_reference(buf.getvalue(), 64, 64)  # resized to the request's size
    assert reference.shape == (64, 64, 3)
    gen = generator("video")
    out = await output(gen, video_req(frames=8, input_reference=buf.getvalue()))
    frames, _ = video_frames(out.files[0].data)
    gap = [np.abs(f.astype(int) - reference.astype(int)).mean() for f in frames]
    assert gap[0] < 4.0  # the reference itself, up to H.264's loss
    assert gap[-1] > gap[0] + 10 and gap[-1] > gap[1]


async def test_a_reference_that_is_not_an_image_is_refused() -> None:
    gen = generator("video")
    with pytest.raises(EngineError, match="input_reference is not a PNG, JPEG or WebP") as e:
        await output(gen, video_req(input_reference=b"not an image"))
    assert not e.value.retryable and gen.load_metrics()[0].running == 0


# --- audio ----------------------------------------------------------------------------------------------------------
async def test_audio_lasts_the_seconds_asked_at_the_card_rate() -> None:
    gen = generator("audio")
    out = await output(gen, audio_req(seconds=1.25))
    info = soundfile.info(io.BytesIO(out.files[0].data))
    assert (info.samplerate, info.frames, info.channels) == (24000, 30000, 1)
    assert out.files[0].content_type == "audio/wav"
    samples, _ = soundfile.read(io.BytesIO(out.files[0].data))
    assert 0.05 < np.abs(samples).max() <= 1.0
    flac = await output(gen, audio_req(seconds=0.5, output_format="flac"))
    assert soundfile.info(io.BytesIO(flac.files[0].data)).frames == 12000


async def test_audio_follows_seed_voice_and_speed() -> None:
    gen = generator("audio")
    base = (await output(gen, audio_req())).files[0].data
    assert (await output(gen, audio_req())).files[0].data == base
    for change in ({"seed": 8}, {"voice": "echo"}, {"speed": 1.5}, {"prompt": "goodbye"}):
        assert (await output(gen, audio_req(**change))).files[0].data != base, change
    assert (await output(gen, audio_req(voice="alloy"))).files[0].data == base  # the default voice


async def test_speed_changes_the_tempo_of_the_notes() -> None:
    slow = mocker.media.render_audio("hi", 1, "alloy", 2.4, 1.0)
    fast = mocker.media.render_audio("hi", 1, "alloy", 2.4, 2.0)

    def onsets(x: np.ndarray) -> int:  # note starts: the envelope restarts every note
        env = np.abs(x).reshape(-1, 240).max(axis=1)
        return int(np.sum((env[1:] > env[:-1] * 1.5)))

    assert onsets(fast) > onsets(slow) * 1.5


# --- steps, the slot, cancellation ------------------------------------------------------------------------------------
async def test_one_progress_event_per_step_then_the_output() -> None:
    gen = generator("image")
    progress, out = await run(gen, image_req(steps=7))
    assert [(p.step, p.total_steps) for p in progress] == [(i, 7) for i in range(1, 8)]
    assert out.steps == 7 and gen.load_metrics()[0].running == 0


async def test_closing_the_iterator_frees_the_slot_for_the_next_request() -> None:
    gen = generator("image")
    first = gen.generate_media(image_req("a", steps=20))
    assert isinstance(await first.__anext__(), MediaProgress)
    assert (gen.load_metrics()[0].running, gen.load_metrics()[0].waiting) == (1, 0)
    second = asyncio.create_task(output(gen, image_req("b", steps=2)))
    await until(lambda: gen.load_metrics()[0].waiting == 1)
    assert not second.done()
    await first.aclose()
    out = await second
    assert len(out.files) == 1
    assert (gen.load_metrics()[0].running, gen.load_metrics()[0].waiting) == (0, 0)


async def test_cancelling_the_consumer_frees_the_slot(clock: VirtualClock) -> None:
    gen = generator("image", speedup_ratio=1.0)
    task = asyncio.create_task(output(gen, image_req("a", steps=50)))
    await until(lambda: gen.load_metrics()[0].running == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gen.load_metrics()[0].running == 0
    assert len((await output(gen, image_req("b", steps=1))).files) == 1


async def test_a_waiting_request_that_goes_away_leaves_the_queue() -> None:
    gen = generator("image")
    first = gen.generate_media(image_req("a", steps=3))
    await first.__anext__()
    waiting = asyncio.create_task(output(gen, image_req("b")))
    await until(lambda: gen.load_metrics()[0].waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (gen.load_metrics()[0].running, gen.load_metrics()[0].waiting) == (1, 0)
    assert [e.step async for e in first if isinstance(e, MediaProgress)] == [2, 3]
    assert gen.load_metrics()[0].running == 0


async def test_waiting_requests_start_by_priority_then_arrival() -> None:
    gen = generator("image")
    first = gen.generate_media(image_req("a", steps=5))
    await first.__anext__()
    started: list[str] = []

    async def go(rid: str, priority: int) -> None:
        async for event in gen.generate_media(image_req(rid, steps=1, priority=priority)):
            if isinstance(event, MediaProgress) and event.step == 1:
                started.append(rid)

    tasks = [asyncio.create_task(go(rid, prio)) for rid, prio in (("late", 5), ("urgent", 0), ("urgent2", 0))]
    await until(lambda: gen.load_metrics()[0].waiting == 3)
    await first.aclose()
    await asyncio.gather(*tasks)
    assert started == ["urgent", "urgent2", "late"]


async def test_abort_stops_a_running_request_at_the_next_step_and_drops_a_waiting_one() -> None:
    gen = generator("image")
    running = gen.generate_media(image_req("a", steps=10))
    await running.__anext__()
    waiting = asyncio.create_task(output(gen, image_req("b", steps=1)))
    await until(lambda: gen.load_metrics()[0].waiting == 1)
    await gen.abort("b")
    assert gen.load_metrics()[0].waiting == 0  # out of the queue at once
    with pytest.raises(EngineError, match="aborted") as e:
        await waiting
    assert not e.value.retryable and gen.load_metrics()[0].waiting == 0
    await gen.abort("a")
    with pytest.raises(EngineError, match="aborted"):
        await running.__anext__()
    assert gen.load_metrics()[0].running == 0
    await gen.abort("nobody")  # unknown ids are fine


async def test_stop_fails_waiting_and_running_requests_retryably() -> None:
    gen = generator("image")
    running = gen.generate_media(image_req("a", steps=10))
    await running.__anext__()
    waiting = asyncio.create_task(output(gen, image_req("b")))
    await until(lambda: gen.load_metrics()[0].waiting == 1)
    await gen.stop()
    with pytest.raises(EngineError, match="stopped") as e:
        await waiting
    assert e.value.retryable
    with pytest.raises(EngineError, match="stopped"):
        await running.__anext__()
    assert not gen.healthy()
    with pytest.raises(EngineError, match="down"):
        await output(gen, image_req("c"))


@pytest.mark.parametrize(("request_", "fragment"), [
    (image_req(size=2048), "size 2048x2048 must be multiples of 8 of at most 1024x1024"),
    (image_req(size=60), "must be multiples of 8"),
    (image_req(steps=51), "num_inference_steps=51 must be between 1 and 50"),
    (image_req(n=11), "n=11 must be between 1 and 10"),
    (dataclasses.replace(image_req(), output_format="gif"), "output format 'gif' is not one of"),
    (dataclasses.replace(image_req(), kind="video"), "makes image, not 'video'"),
    (image_req(input_reference=b"x"), "takes no input_reference"),
    (image_req(dp_rank=1), "dp_rank 1 out of range"),
])
async def test_requests_outside_the_card_are_refused(request_: MediaRequest, fragment: str) -> None:
    with pytest.raises(EngineError) as e:
        await output(generator("image"), request_)
    assert fragment in str(e.value) and not e.value.retryable


async def test_audio_and_video_requests_outside_the_card_are_refused() -> None:
    for kind, request_, fragment in (
        ("audio", audio_req(seconds=121.0), "seconds=121.0 must be > 0 and <= 120"),
        ("audio", audio_req(voice="robot"), "voice 'robot' is not one of"),
        ("audio", audio_req(speed=5.0), "speed=5.0 must be between"),
        ("video", video_req(frames=97), "num_frames=97 must be between 1 and 96"),
        ("video", video_req(fps=31), "fps=31 must be between 1 and 30"),
        ("video", video_req(n=2), "n=2 must be between 1 and 1"),
    ):
        with pytest.raises(EngineError) as e:
            await output(generator(kind), request_)
        assert fragment in str(e.value) and not e.value.retryable


# --- timing (virtual clock) -------------------------------------------------------------------------------------------
async def test_step_time_scales_with_pixels_frames_n_and_seconds(clock: VirtualClock) -> None:
    image = generator("image", speedup_ratio=1.0, media_step_ms=20.0)
    t0 = clock.read()
    out = await output(image, image_req(size=512, steps=10))
    assert clock.read() - t0 == pytest.approx(10 * 0.020)
    assert out.inference_time_s == pytest.approx(10 * 0.020)
    assert (await output(image, image_req(size=256, steps=10))).inference_time_s == pytest.approx(10 * 0.005)
    assert (await output(image, image_req(size=256, steps=10, n=4))).inference_time_s == pytest.approx(10 * 0.020)
    video = generator("video", speedup_ratio=1.0, media_step_ms=20.0)
    # 8 frames cost one picture step, 32 frames four
    assert (await output(video, video_req(size=256, frames=8))).inference_time_s == pytest.approx(2 * 0.005)
    assert (await output(video, video_req(size=256, frames=32))).inference_time_s == pytest.approx(2 * 0.020)
    audio = generator("audio", speedup_ratio=1.0, media_step_ms=20.0)
    assert (await output(audio, audio_req(seconds=5.0))).inference_time_s == pytest.approx(2 * 0.010)


async def test_speedup_ratio_and_step_ms_are_acted_on(clock: VirtualClock) -> None:
    fast = generator("image", speedup_ratio=4.0, media_step_ms=20.0)
    assert (await output(fast, image_req(size=512, steps=10))).inference_time_s == pytest.approx(0.050)
    slow = generator("image", speedup_ratio=1.0, media_step_ms=100.0)
    assert (await output(slow, image_req(size=512, steps=10))).inference_time_s == pytest.approx(1.0)
    t0 = clock.read()
    await output(generator("image", speedup_ratio=0.0), image_req(size=512, steps=10))
    assert clock.read() == t0  # 0: no simulated time at all


async def test_a_queued_request_waits_for_the_running_one(clock: VirtualClock) -> None:
    gen = generator("image", speedup_ratio=1.0, media_step_ms=20.0)
    t0 = clock.read()
    a, b = await asyncio.gather(output(gen, image_req("a", size=512, steps=10)),
                                output(gen, image_req("b", size=512, steps=10)))
    assert clock.read() - t0 == pytest.approx(0.400)  # one after the other, not side by side
    assert a.inference_time_s == pytest.approx(0.200) and b.inference_time_s == pytest.approx(0.200)


async def test_startup_time_is_slept(clock: VirtualClock) -> None:
    gen = generator("audio", startup_time=1.5)
    t0 = clock.read()
    await gen.start()
    assert clock.read() - t0 == pytest.approx(1.5) and gen.healthy()
    await gen.stop()
