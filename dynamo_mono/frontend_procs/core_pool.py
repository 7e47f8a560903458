"""The HTTP process's side of the link: CoreClient (one connection to the core) and CorePool, the pool a model of an
HTTP process routes to — it hands whole requests to the core, which admits, routes and runs them."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, AsyncIterator, Callable

from dynamo_mono.engine import EngineOutput, EngineRequest, ModelCard
from dynamo_mono.frontend_procs import messages as lm
from dynamo_mono.router.metrics import RouterMetrics
from dynamo_mono.transports import messages as wm
from dynamo_mono.transports.framing import FramedConnection
from dynamo_mono.worker.stream import StreamBuffer

log = logging.getLogger("dynamo_mono.frontend_procs.http")


class CoreClient:
    """Multiplexes this process's jobs and streams over its one connection to the core."""

    def __init__(self, conn: FramedConnection, *, on_models: Callable[[lm.Models], None],
                 metrics_families: Callable[[], list[lm.MetricFamily]], on_drain: Callable[[], None]) -> None:
        self.conn = conn
        self.on_drain = on_drain
        self.on_models = on_models
        self.metrics_families = metrics_families
        self.streams: dict[int, StreamBuffer] = {}
        self.jobs: dict[int, asyncio.Future] = {}
        self.ids = itertools.count(1)
        self.alive = True
        self.closed = asyncio.Event()

    def send(self, msg: Any) -> None:
        self.conn.send_nowait(lm.encode(msg))

    def cancel(self, ids: list[int]) -> None:
        if self.alive and ids:
            try:
                self.send(lm.Cancel(ids))
            except ConnectionError:
                pass

    async def read_loop(self) -> None:
        decode = lm.decode_to_http
        streams = self.streams
        jobs = self.jobs
        Output, Failed, Admitted = wm.Output, lm.Failed, lm.Admitted
        try:
            while True:
                msg = decode(await self.conn.recv())
                t = type(msg)
                if t is lm.Batch:
                    for item in msg.items:
                        it = type(item)
                        if it is Output:
                            s = streams.get(item.stream)
                            if s is not None:
                                s.push(item)
                        elif it is Admitted:
                            fut = jobs.pop(item.job, None)
                            if fut is not None and not fut.done():
                                fut.set_result(None)
                        elif it is Failed:
                            fut = jobs.pop(item.stream, None)
                            if fut is not None:
                                if not fut.done():
                                    fut.set_exception(lm.exception_of(item))
                            else:
                                s = streams.get(item.stream)
                                if s is not None:
                                    s.push(item)
                elif t is lm.Models:
                    self.on_models(msg)
                elif t is lm.Drain:
                    self.on_drain()
                elif t is lm.MetricsPull:
                    self.send(lm.MetricsPush(msg.seq, self.metrics_families()))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception as exc:  # a malformed frame: the link cannot be trusted any more
            log.error("link to the core: protocol error %s: %s", type(exc).__name__, exc)
        finally:
            self.alive = False
            self.conn.close()
            lost = lm.Failed(0, "EngineFailed", "the server core went away", retryable=True)
            for s in list(streams.values()):
                s.push(lost)
            for fut in jobs.values():
                if not fut.done():
                    fut.set_exception(lm.exception_of(lost))
            self.closed.set()


class RouterView:
    """What an HTTP process's model needs of a router: the block size, and the block-hashing metric."""

    def __init__(self, block_size: int, metrics: RouterMetrics) -> None:
        self.block_size = block_size
        self.metrics = metrics

    def observe_block_hashing_ms(self, ms: float) -> None:
        self.metrics.block_hashing.observe(ms)


class CorePool:
    """A model's pool in an HTTP process: `submit` hands a generation's requests to the core (which checks,
    queues, routes and starts them) and `generate` streams one request's outputs back."""

    remote = True  # Generation.admit / finish: the core holds the admission slots

    def __init__(self, client: CoreClient, model: str, entry: lm.ModelEntry, router: RouterView) -> None:
        self.client = client
        self.model = model
        self.router = router
        self._card = entry.card
        self.instances: dict[int, None] = dict.fromkeys(entry.worker_ids)
        self._open: dict[int, tuple[int, StreamBuffer]] = {}  # id(request) -> its stream, until generate takes it

    def card(self) -> ModelCard | None:
        return self._card

    def serving_instances(self) -> list:
        return []

    def ready_instances(self) -> list:
        return []

    def preflight(self, req: Any) -> None:
        """The core checks pins and capacity when the request is submitted."""

    async def submit(self, requests: list[EngineRequest], latency_sensitivity: float | None) -> None:
        """Admit and start `requests` in the core; raises the core's refusal (queue full, no instance, ...)."""
        client = self.client
        if not client.alive:
            raise lm.exception_of(lm.Failed(0, "NoInstance", "the server core is not reachable"))
        ids = client.ids
        job = next(ids)
        sids = []
        for req in requests:
            sid = next(ids)
            stream = StreamBuffer()
            client.streams[sid] = stream
            self._open[id(req)] = (sid, stream)
            sids.append(sid)
        fut = asyncio.get_running_loop().create_future()
        client.jobs[job] = fut
        try:
            client.send(lm.Submit(job, self.model, sids, requests, latency_sensitivity))
            await fut
        except BaseException:
            client.jobs.pop(job, None)
            self.release(requests, extra=[job])
            raise

    def release(self, requests: list[EngineRequest], extra: list[int] | None = None) -> None:
        """Forget the streams generate() never took (and tell the core to stop them)."""
        ids = list(extra or ())
        streams = self.client.streams
        for req in requests:
            entry = self._open.pop(id(req), None)
            if entry is not None:
                streams.pop(entry[0], None)
                ids.append(entry[0])
        self.client.cancel(ids)

    async def generate(self, req: EngineRequest) -> AsyncIterator[EngineOutput]:
        sid, stream = self._open.pop(id(req))
        client = self.client
        finished = False
        try:
            loop = asyncio.get_running_loop()
            items = stream.items
            Output = wm.Output
            while True:
                if not items:
                    fut = loop.create_future()
                    stream.waiter = fut
                    await fut
                    continue
                item = items.popleft()
                if type(item) is Output:
                    # An Output has EngineOutput's fields under the same names, which is all ChoiceState reads:
                    # it is handed on as is (no second object per step per stream).
                    if item.finish_reason is not None:
                        finished = True
                    yield item  # type: ignore[misc]
                    if finished:
                        return
                else:
                    finished = True
                    raise lm.exception_of(item)
        finally:
            client.streams.pop(sid, None)
            if not finished:
                client.cancel([sid])
