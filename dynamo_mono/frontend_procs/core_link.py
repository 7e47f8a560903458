"""The core's side of the link: admits, routes and runs the HTTP processes' requests, streams outputs back batched.

Each HTTP process holds one Unix-socket connection. A Submit passes the same preflight and admission queues as a
request of the single-process server (one queue, one router over all instances, whichever process accepted it),
then each of its engine requests runs as a task over `pool.generate` (migration included). Outputs produced
during one event-loop pass (one engine step) leave in one Batch frame per connection. A Cancel, or the death of
the connection, cancels the tasks: closing `pool.generate` aborts the engine request and frees its slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from contextlib import aclosing
from typing import Any, Callable

from dynamo_mono.frontend_procs import messages as lm
from dynamo_mono.serving.admission import pass_queue
from dynamo_mono.serving.chat import admission_queues
from dynamo_mono.serving.errors import ModelNotFound
from dynamo_mono.transports import messages as wm
from dynamo_mono.transports.framing import FramedConnection

log = logging.getLogger("dynamo_mono.frontend_procs.core")


class _Job:
    """The admission slots of one API request, released when its last stream ends."""

    __slots__ = ("held", "live", "link")

    def __init__(self, link: "CoreLink") -> None:
        self.held: list = []
        self.live = 0
        self.link = link
        link.inflight += 1

    def release(self) -> None:
        while self.held:
            self.held.pop().release()
        if self.link is not None:
            self.link.inflight -= 1
            self.link = None

    def stream_done(self) -> None:
        self.live -= 1
        if self.live <= 0:
            self.release()


def model_entries(state: Any) -> list[lm.ModelEntry]:
    """What the HTTP processes need to know of the served models."""
    out = []
    for m in state.models.values():
        out.append(lm.ModelEntry(m.name, m.kind, m.configured, m.pool.card(), m.block_size,
                                 sorted(i.worker_id for i in m.pool.serving_instances()), m.reasoning_parser,
                                 m.tool_call_parser, m.parent.name if m.parent is not None else None, m.lora_name))
    return out


class ProcConnection:
    """One HTTP process's connection: its jobs, its running streams, the Batch being filled this loop pass."""

    def __init__(self, link: "CoreLink", conn: FramedConnection, index: int, pid: int) -> None:
        self.link = link
        self.state = link.state
        self.conn = conn
        self.index = index
        self.pid = pid
        self.tasks: dict[int, asyncio.Task] = {}  # job id (admitting) or stream id (running) -> its task
        self._pending: list = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self.alive = True

    # --- sending: one frame per loop pass ---------------------------------------------------
    def emit(self, item: Any) -> None:
        self._pending.append(item)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        items = self._pending
        if not items or not self.alive:
            items.clear()
            return
        self._pending = []
        self.send(lm.Batch(items))

    def send(self, msg: Any) -> None:
        if not self.alive:
            return
        try:
            self.conn.send_nowait(lm.encode(msg))
        except ConnectionError as exc:
            log.warning("HTTP process %d: link lost on send (%s)", self.index, exc)
            self.conn.close()
            self.alive = False

    # --- receiving --------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve this connection until it closes; then cancel everything it started."""
        decode = lm.decode_to_core
        tasks = self.tasks
        try:
            while True:
                msg = decode(await self.conn.recv())
                t = type(msg)
                if t is lm.Submit:
                    self._submit(msg)
                elif t is lm.Cancel:
                    for sid in msg.streams:
                        task = tasks.get(sid)
                        if task is not None:
                            task.cancel()
                elif t is lm.MetricsPush:
                    self.link.metrics_reply(self, msg)
                elif t is lm.Listening:
                    if self.link.on_listening is not None:
                        self.link.on_listening(self.index)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception as exc:  # a malformed frame: drop the process's link rather than guess
            log.warning("HTTP process %d: protocol error %s: %s", self.index, type(exc).__name__, exc)
        finally:
            self.alive = False
            self.conn.close()
            running = list(tasks.values())
            for task in running:
                task.cancel()
            if running:
                log.info("HTTP process %d gone: aborting its %d request(s)", self.index, len(running))
                await asyncio.gather(*running, return_exceptions=True)

    def _submit(self, msg: lm.Submit) -> None:
        """Checks that need no waiting run here; a job that must pass admission queues waits in its own task."""
        job = _Job(self.link)
        try:
            model = self.state.models.get(msg.model)
            if model is None:
                raise ModelNotFound(f"The model '{msg.model}' does not exist", param="model")
            pool = model.pool
            for req in msg.requests:
                if req.choice_index == 0:
                    pool.preflight(req)
            queues = admission_queues(self.state, model)
        except Exception as exc:
            job.release()
            self.emit(lm.failure_of(msg.job, exc))
            return
        if queues:
            self.tasks[msg.job] = self._loop.create_task(self._admit(msg, job, model, queues))
        else:
            self._start(msg, job, pool)

    async def _admit(self, msg: lm.Submit, job: _Job, model: Any, queues: tuple) -> None:
        try:
            gauge = self.state.metrics.model(model.name).queued
            prio = msg.requests[0].priority if msg.requests else 0
            for q in queues:
                await pass_queue(q, prio, msg.latency_sensitivity, gauge)
                job.held.append(q)
        except asyncio.CancelledError:
            job.release()
            raise
        except Exception as exc:
            job.release()
            self.emit(lm.failure_of(msg.job, exc))
            return
        finally:
            self.tasks.pop(msg.job, None)
        self._start(msg, job, model.pool)

    def _start(self, msg: lm.Submit, job: _Job, pool: Any) -> None:
        """Admitted: tell the HTTP process, and run each of the job's engine requests."""
        self.emit(lm.Admitted(msg.job))
        job.live = len(msg.streams)
        create = self._loop.create_task
        for sid, req in zip(msg.streams, msg.requests):
            self.tasks[sid] = create(self._pump(sid, pool, req, job))
        if not msg.streams:
            job.release()

    async def _pump(self, sid: int, pool: Any, req: Any, job: _Job) -> None:
        emit = self.emit
        output = wm.output_message
        try:
            async with aclosing(pool.generate(req)) as outs:
                async for out in outs:
                    emit(output(sid, out))
                    if out.finish_reason is not None:
                        return
            emit(lm.Failed(sid, "EngineError", "engine stream ended without a finish reason"))
        except asyncio.CancelledError:
            pass  # the HTTP side asked for it, or is gone: nothing to tell it
        except Exception as exc:
            emit(lm.failure_of(sid, exc))
        finally:
            self.tasks.pop(sid, None)
            job.stream_done()


class CoreLink:
    """The core's listener for its HTTP processes, the model list it keeps them in sync with, metrics pulls."""

    MODEL_CHECK_S = 0.005

    def __init__(self, state: Any, path: str, *, max_frame: int,
                 on_listening: Callable[[int], None] | None = None) -> None:
        self.state = state
        self.path = path
        self.max_frame = max_frame
        self.on_listening = on_listening
        self.conns: dict[int, ProcConnection] = {}
        self._server: asyncio.AbstractServer | None = None
        self._watch: asyncio.Task | None = None
        self._models_frame = b""
        self._pulls: dict[int, tuple[asyncio.Future, dict]] = {}
        self._seq = 0
        self.inflight = 0  # API requests of the HTTP processes admitted (or being admitted) and not finished

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._accept, self.path)
        self._models_frame = lm.encode(lm.Models(model_entries(self.state)))
        self._watch = asyncio.get_running_loop().create_task(self._watch_models())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self.conns.values()):
            c.conn.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FramedConnection(reader, writer, max_frame=self.max_frame)
        try:
            hello = lm.decode_to_core(await conn.recv())
        except Exception:
            conn.close()
            return
        if type(hello) is not lm.Hello or hello.version != lm.LINK_VERSION:
            conn.close()
            return
        pc = ProcConnection(self, conn, hello.index, hello.pid)
        self.conns[hello.index] = pc
        conn.send_nowait(self._models_frame)
        try:
            await pc.run()
        finally:
            if self.conns.get(hello.index) is pc:
                del self.conns[hello.index]

    async def _watch_models(self) -> None:
        """Push the model list to every process when it changes (workers joining, adapters loaded). Checked every
        MODEL_CHECK_S (a few microseconds per check): a change is everywhere well before a client that saw it
        through the core (a /health, a worker's join) can send the next request."""
        last = model_entries(self.state)
        while True:
            await asyncio.sleep(self.MODEL_CHECK_S)
            entries = model_entries(self.state)
            if entries != last:
                last = entries
                frame = self._models_frame = lm.encode(lm.Models(entries))
                for c in list(self.conns.values()):
                    if c.alive:
                        try:
                            c.conn.send_nowait(frame)
                        except ConnectionError:
                            pass

    # --- metrics ----------------------------------------------------------------------------
    async def pull_metrics(self, timeout: float = 5.0) -> list[list[lm.MetricFamily]]:
        """Every connected HTTP process's metric families (those that answer within timeout)."""
        conns = [c for c in self.conns.values() if c.alive]
        if not conns:
            return []
        self._seq += 1
        seq = self._seq
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        replies: dict = {}
        self._pulls[seq] = (fut, {"want": len(conns), "got": replies})
        for c in conns:
            c.send(lm.MetricsPull(seq))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            log.warning("metrics: %d of %d HTTP process(es) did not answer", len(conns) - len(replies), len(conns))
        finally:
            self._pulls.pop(seq, None)
        return list(replies.values())

    def metrics_reply(self, conn: ProcConnection, msg: lm.MetricsPush) -> None:
        entry = self._pulls.get(msg.seq)
        if entry is None:
            return
        fut, acc = entry
        acc["got"][conn.index] = msg.families
        if len(acc["got"]) >= acc["want"] and not fut.done():
            fut.set_result(None)
