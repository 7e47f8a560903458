"""The diffusers media generator: one pipeline per instance, run on one worker thread, requests queued by priority."""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import logging
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, AsyncIterator

from dynamo_mono.api import (
    EngineArgs,
    EngineError,
    KvEventBatch,
    KvEventSink,
    LoadMetrics,
    MediaOutput,
    MediaProgress,
    MediaRequest,
    ModelCard,
)

from dynamo_mono_diffusers.loader import LoadedPipeline, load_pipeline
from dynamo_mono_diffusers.options import DiffusersSettings
from dynamo_mono_diffusers.runner import DeviceFault, Job, JobCancelled, call_kwargs, run_job

log = logging.getLogger("dynamo_mono.diffusers")

_SEED_RANGE = 1 << 31  # a seed picked for a request that names none (fits every API's seed field)


class DiffusersGenerator:
    """A MediaGenerator over a local diffusers pipeline directory (EngineArgs.model_path).

    A device runs one pipeline call at a time, so the instance has one worker thread: a request runs when the
    one before it is done, and the others wait in a queue ordered by priority (lower first), then arrival.
    Closing a request's iterator (or abort()) stops its pipeline call at the next denoising step."""

    def __init__(self, args: EngineArgs, settings: DiffusersSettings) -> None:
        self._args = args
        self._settings = settings
        self._loaded: LoadedPipeline | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._waiting: list[tuple[int, int, Job, asyncio.Queue]] = []  # a heap
        self._running: Job | None = None
        self._jobs: dict[str, Job] = {}  # waiting or running, by request id (for abort)
        self._order = itertools.count()
        self._fault: str | None = None
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"diffusers-{self._args.instance_id}")
        # Loaded on the worker thread itself: every torch call of this instance happens there.
        self._loaded = loaded = await self._loop.run_in_executor(
            self._executor, load_pipeline, self._args.model_path, self._settings, self._args.kind,
            self._args.instance_id)
        lim, t = loaded.limits, loaded.traits
        shape = (f"{lim.default_seconds:g} s at {lim.sample_rate} Hz" if self._args.kind == "audio"
                 else f"{lim.default_width}x{lim.default_height}")
        if self._args.kind == "video":
            shape += f", {lim.default_frames} frames at {lim.default_fps} fps"
        log.info("diffusers instance %d: %s (%s) from %s on %s as %s in %.1f s; defaults %s, %d steps",
                 self._args.instance_id, t.class_name, t.task, self._args.model_path, loaded.device, loaded.dtype,
                 loaded.load_s, shape, lim.default_steps)
        if t.step_callback is None:
            log.warning("%s takes no step callback: no progress events, and a cancelled request runs to its end",
                        t.class_name)

    async def stop(self) -> None:
        self._stopping = True
        for _, _, job, events in self._waiting:
            events.put_nowait(EngineError("the instance stopped", retryable=True))
        self._waiting.clear()
        if self._running is not None:
            self._running.cancel.set()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None
        if self._loaded is not None:
            device = self._loaded.device
            self._loaded = None
            gc.collect()
            if device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (None before start), for inspection: only the worker thread runs it."""
        return self._loaded.pipe if self._loaded is not None else None

    def model_card(self) -> ModelCard:
        if self._loaded is None:
            raise RuntimeError("the diffusers instance is not started")
        return ModelCard(name=self._args.served_model_name, max_model_len=0, block_size=1, kind=self._args.kind,
                         media=self._loaded.limits, supports_priority=True, priority_higher_is_urgent=False,
                         supports_logprobs=False)

    async def generate_media(self, request: MediaRequest) -> AsyncIterator[MediaProgress | MediaOutput]:
        loaded = self._loaded
        if loaded is None or self._stopping or self._fault is not None:
            raise EngineError(f"instance {self._args.instance_id} is not serving"
                              + (f" ({self._fault})" if self._fault else ""), retryable=True)
        if request.kind != self._args.kind:
            raise EngineError(f"a {request.kind} request reached a {self._args.kind} instance", retryable=False)
        kwargs, fps = call_kwargs(loaded.traits, loaded.limits, request)
        seed = request.seed if request.seed is not None else secrets.randbelow(_SEED_RANGE)
        events: asyncio.Queue = asyncio.Queue()
        job = Job(request, seed, kwargs, fps=fps, report=self._reporter(events))
        self._enqueue(job, events)
        try:
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, MediaOutput):
                    return
        finally:
            self._release(job)

    async def abort(self, request_id: str) -> None:
        job = self._jobs.get(request_id)
        if job is None:
            return
        job.aborted = True
        job.cancel.set()
        events = self._unqueue(job)
        if events is not None:
            events.put_nowait(_cancelled(job))

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        """Media generators publish no KV events."""

    def kv_snapshot(self) -> list[KvEventBatch]:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics(dp_rank=0, running=int(self._running is not None), waiting=len(self._waiting))]

    def healthy(self) -> bool:
        return self._loaded is not None and self._fault is None and not self._stopping

    # -- the queue (event-loop side) --

    def _reporter(self, events: asyncio.Queue):  # noqa: ANN202 - a Callable[[MediaProgress], None]
        loop = self._loop
        assert loop is not None
        return lambda progress: loop.call_soon_threadsafe(events.put_nowait, progress)

    def _enqueue(self, job: Job, events: asyncio.Queue) -> None:
        heapq.heappush(self._waiting, (job.request.priority, next(self._order), job, events))
        self._jobs[job.request.request_id] = job
        self._dispatch()

    def _dispatch(self) -> None:
        if self._running is not None or not self._waiting or self._stopping or self._executor is None:
            return
        _, _, job, events = heapq.heappop(self._waiting)
        self._running = job
        loaded = self._loaded
        future = self._executor.submit(run_job, loaded.pipe, loaded.traits, loaded.limits, job)
        loop = self._loop
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._finished, job, events, f))

    def _finished(self, job: Job, events: asyncio.Queue, future: Future) -> None:
        self._running = None
        if self._jobs.get(job.request.request_id) is job:
            del self._jobs[job.request.request_id]
        exc = future.exception()
        if exc is None:
            out = future.result()
            log.debug("request %s: %d %s file(s) in %.2f s", job.request.request_id, len(out.files), job.request.kind,
                      out.inference_time_s)
            events.put_nowait(out)
        elif isinstance(exc, JobCancelled):
            events.put_nowait(_cancelled(job))
        else:
            if isinstance(exc, DeviceFault):
                self._fault = str(exc)
                log.error("diffusers instance %d is unhealthy: %s", self._args.instance_id, exc)
            events.put_nowait(exc)
        self._dispatch()

    def _unqueue(self, job: Job) -> asyncio.Queue | None:
        """Take a waiting job out of the queue (its event queue), or None when it is not waiting."""
        for i, entry in enumerate(self._waiting):
            if entry[2] is job:
                self._waiting[i] = self._waiting[-1]
                self._waiting.pop()
                heapq.heapify(self._waiting)
                if self._jobs.get(job.request.request_id) is job:
                    del self._jobs[job.request.request_id]
                return entry[3]
        return None

    def _release(self, job: Job) -> None:
        """The request's iterator ended or was closed: drop it from the queue, or stop it at its next step."""
        job.cancel.set()
        self._unqueue(job)


def _cancelled(job: Job) -> EngineError:
    how = "aborted" if job.aborted else "cancelled"
    return EngineError(f"request {job.request.request_id} was {how}", retryable=False)
