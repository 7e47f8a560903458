"""WorkerSession: the server's side of one worker connection (streams, heartbeats, events, death)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Callable

from dynamo_mono.transports import messages as m
from dynamo_mono.transports.framing import FramedConnection, FrameTooLarge
from dynamo_mono.worker.remote_engine import RemoteEngine
from dynamo_mono.worker.stream import StreamBuffer

log = logging.getLogger("dynamo_mono.worker.session")


class WorkerSession:
    """Multiplexes the streams of a worker's instances over one framed connection."""

    def __init__(self, conn: FramedConnection, name: str, *, heartbeat_interval: float, misses: int,
                 on_dead: Callable[["WorkerSession", str], None]) -> None:
        self.conn = conn
        self.name = name
        self.interval = heartbeat_interval
        self.misses = misses
        self.on_dead = on_dead
        self.alive = True
        self.engines: list[RemoteEngine] = []
        self.streams: dict[int, StreamBuffer] = {}
        self.by_request: dict[str, set[int]] = {}
        self.stream_rid: dict[int, str] = {}
        self._ids = itertools.count(1)
        self.last_rx = time.monotonic()
        self._tasks: list[asyncio.Task] = []

    # --- streams ---------------------------------------------------------------------------
    def open_stream(self, request_id: str) -> tuple[int, StreamBuffer]:
        sid = next(self._ids)
        stream = StreamBuffer()
        self.streams[sid] = stream
        self.stream_rid[sid] = request_id
        self.by_request.setdefault(request_id, set()).add(sid)
        return sid, stream

    def close_stream(self, sid: int, *, abort: bool) -> None:
        self.streams.pop(sid, None)
        rid = self.stream_rid.pop(sid, None)
        if rid is not None:
            s = self.by_request.get(rid)
            if s is not None:
                s.discard(sid)
                if not s:
                    del self.by_request[rid]
        if abort and self.alive:
            self.abort_stream(sid)

    def streams_of(self, request_id: str) -> list[int]:
        return list(self.by_request.get(request_id, ()))

    def abort_stream(self, sid: int) -> None:
        try:
            self.send_nowait(m.Abort(sid))
        except ConnectionError:
            pass

    def send_nowait(self, msg: object) -> None:
        try:
            self.conn.send_nowait(m.encode(msg))
        except FrameTooLarge:
            raise  # nothing was sent: the message is at fault, not the connection
        except ConnectionError as exc:
            self.kill(str(exc))
            raise

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._heartbeat_loop())]

    async def _read_loop(self) -> None:
        conn = self.conn
        decode = m.decode
        streams = self.streams
        engines = self.engines
        reason = "connection closed"
        try:
            while True:
                frame = await conn.recv()
                self.last_rx = time.monotonic()
                msg = decode(frame)
                t = type(msg)
                if t is m.Output or t is m.StreamFailed or t is m.Embedded or t is m.MediaChunk or \
                        t is m.MediaStep or t is m.MediaDone or t is m.LoraDone:
                    s = streams.get(msg.stream)
                    if s is not None:
                        s.push(msg)
                elif t is m.KvEvents:
                    eng = engines[msg.instance]
                    sink = eng.sink
                    if sink is not None:
                        sink(m.batch_from_wire(msg.batch, eng.worker_id))
                elif t is m.Heartbeat:
                    for eng, ok in zip(engines, msg.healthy):
                        eng.worker_healthy = ok
                elif t is m.Load:
                    for eng, loads in zip(engines, msg.loads):
                        eng.loads = loads
                elif t is m.Snapshot:
                    eng = engines[msg.instance]
                    eng.snapshot = [m.batch_from_wire(b, eng.worker_id) for b in msg.batches]
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            reason = f"connection lost ({type(exc).__name__}: {exc})" if str(exc) else "connection lost"
        except Exception as exc:  # a malformed frame: drop the worker rather than guess
            reason = f"protocol error: {type(exc).__name__}: {exc}"
        self.kill(reason)

    async def _heartbeat_loop(self) -> None:
        deadline_s = self.interval * self.misses
        beat = m.encode(m.Heartbeat([]))
        while self.alive:
            await asyncio.sleep(self.interval / 2)
            if time.monotonic() - self.last_rx > deadline_s:
                self.kill(f"no heartbeat for {deadline_s:.1f}s")
                return
            try:
                self.conn.send_nowait(beat)
            except ConnectionError as exc:
                self.kill(str(exc))
                return

    def kill(self, reason: str) -> None:
        """Declare the worker dead exactly once: leave routing first, then fail its in-flight streams."""
        if not self.alive:
            return
        self.alive = False
        self.conn.close()
        self.on_dead(self, reason)
        failed = m.StreamFailed(0, f"worker {self.name} lost: {reason}", True)
        for s in list(self.streams.values()):
            s.push(failed)
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()

    async def close(self) -> None:
        self.kill("server shutting down")
        await self.conn.wait_closed()
