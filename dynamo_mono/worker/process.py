"""The worker process: hosts engine instances, dials the server, serves its requests, reconnects on loss."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from dynamo_mono.config import ConfigError, Settings
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.engine import EmbeddingRequest, EngineError, EngineRequest, LoraAdapter, RequestRejected
from dynamo_mono.media.contract import MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.model_spec import spec_from_settings
from dynamo_mono.serving.launch import engine_registration, load_model, start_engines, stop_all
from dynamo_mono.worker.lora_files import LoraFiles
from dynamo_mono.worker.model_files import pack_model_files
from dynamo_mono.transports import messages as m
from dynamo_mono.transports.framing import FramedConnection

log = logging.getLogger("dynamo_mono.worker")

BACKOFF_START_S = 0.1
REPLY_TIMEOUT_S = 10.0



def failure(sid: int, exc: BaseException) -> m.StreamFailed:
    """The StreamFailed frame of an engine's exception: its retryable flag, and whether the client's parameters
    were refused (RequestRejected, or a generator's InvalidRequest: every instance would refuse it, no retry)."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RequestRejected):
        return m.StreamFailed(sid, str(exc), False, True, exc.param)
    if isinstance(exc, InvalidRequest):
        return m.StreamFailed(sid, exc.message, False, True, exc.param)
    return m.StreamFailed(sid, text, exc.retryable if isinstance(exc, EngineError) else True)

class WorkerRefused(Exception):
    """The server refused this worker (bad token, wrong model...): retrying would not help."""


async def resolve_endpoint(url: str, timeout: float = 2.0) -> tuple[str, int]:
    """(host, worker port) for --connect: tcp://H:P directly, http(s)://H:P through GET /workers/endpoint."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if not parts.hostname:
        raise ConfigError(f"invalid --connect={url!r}: expected http://HOST:PORT or tcp://HOST:PORT")
    if parts.scheme == "tcp":
        if not parts.port:
            raise ConfigError(f"invalid --connect={url!r}: tcp:// needs a port")
        return parts.hostname, parts.port
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async with http.get(f"{parts.scheme}://{parts.netloc}/workers/endpoint") as r:
            if r.status != 200:
                raise ConnectionError(f"{url}/workers/endpoint answered {r.status} (server without --worker-token?)")
            body = await r.json()
    return parts.hostname, int(body["port"])


class Worker:
    """Engine instances of one process and their connection to the server."""

    def __init__(self, settings: Settings, plugins: Any) -> None:
        self.settings = settings
        self.plugins = plugins
        self.engines: list[Any] = []
        self.name = settings.get("worker_name") or f"{socket.gethostname()}:{os.getpid()}"
        self.model = ""
        self.model_files: m.ModelFiles | None = None
        self.stopping = asyncio.Event()
        self.tasks: dict[int, asyncio.Task] = {}
        self.lora_files = LoraFiles()

    async def start_engines(self) -> None:
        s = self.settings
        if not s.connect:
            raise ConfigError("dynamo-mono worker needs --connect http://SERVER:PORT")
        if s.num_instances < 1:
            raise ConfigError(f"invalid --num-instances={s.num_instances}: a worker hosts at least 1")
        if not s.worker_token:
            raise ConfigError("dynamo-mono worker needs --worker-token (or DYN_WORKER_TOKEN), the server's shared secret")
        spec = spec_from_settings(s, self.plugins.backend_options(s.engine))
        reg = engine_registration(self.plugins, spec)
        info = load_model(spec)
        self.model = info.name
        self.model_files = pack_model_files(info, spec.kind)
        self.engines = await start_engines(reg, spec, info)

    async def run(self) -> int:
        """Connect, serve, reconnect with capped exponential backoff; 0 on stop, 2 when refused."""
        backoff = BACKOFF_START_S
        cap = float(self.settings.connect_backoff_max)
        while not self.stopping.is_set():
            try:
                conn, reply = await self._join()
            except WorkerRefused as exc:
                log.error("server refused worker %s: %s", self.name, exc)
                return 2
            except (OSError, ConnectionError, asyncio.TimeoutError, aiohttp.ClientError,
                    asyncio.IncompleteReadError) as exc:
                log.info("server %s not reachable (%s); retrying in %.2fs", self.settings.connect,
                         exc or type(exc).__name__, backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), backoff)
                backoff = min(backoff * 2, cap)
                continue
            backoff = BACKOFF_START_S
            log.info("worker %s joined %s as instance(s) %s", self.name, self.settings.connect, reply.worker_ids)
            await self._serve(conn, reply.heartbeat_interval)
            if not self.stopping.is_set():
                log.warning("lost the server connection; reconnecting")
        return 0

    async def _join(self) -> tuple[FramedConnection, m.Registered]:
        host, port = await resolve_endpoint(self.settings.connect)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        conn = FramedConnection(reader, writer, max_frame=self.settings.max_frame_size)
        try:
            snaps = [[m.batch_to_wire(b) for b in e.kv_snapshot()] for e in self.engines]
            await conn.send(m.encode(m.Register(self.settings.worker_token, self.model,
                                                [e.model_card() for e in self.engines], snaps, self.name,
                                                model_files=self.model_files)))
            reply = m.decode(await asyncio.wait_for(conn.recv(), REPLY_TIMEOUT_S))
        except BaseException:
            conn.close()
            raise
        if isinstance(reply, m.Refused):
            conn.close()
            raise WorkerRefused(reply.reason)
        if not isinstance(reply, m.Registered):
            conn.close()
            raise ConnectionError(f"unexpected first reply {type(reply).__name__}")
        return conn, reply

    # --- one connection ----------------------------------------------------------------------
    async def _serve(self, conn: FramedConnection, interval: float) -> None:
        for i, eng in enumerate(self.engines):
            eng.set_kv_event_sink(self._event_sink(conn, i))
        loop = asyncio.get_running_loop()
        hb = loop.create_task(self._heartbeats(conn, interval))
        stop = loop.create_task(self.stopping.wait())
        reader = loop.create_task(self._read_loop(conn))
        try:
            await asyncio.wait((hb, stop, reader), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (hb, stop, reader):
                t.cancel()
            for eng in self.engines:
                eng.set_kv_event_sink(None)
            tasks = list(self.tasks.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, hb, reader, return_exceptions=True)
            self.tasks.clear()
            conn.close()
            await conn.wait_closed()

    def _event_sink(self, conn: FramedConnection, instance: int):
        def sink(batch) -> None:
            try:
                conn.send_nowait(m.encode(m.KvEvents(instance, m.batch_to_wire(batch))))
            except ConnectionError:
                pass  # the read loop notices and reconnects

        return sink

    async def _heartbeats(self, conn: FramedConnection, interval: float) -> None:
        """Send heartbeat + load every interval; give up on a server silent for 3 intervals."""
        self.last_rx = time.monotonic()
        while True:
            try:
                conn.send_nowait(m.encode(m.Heartbeat([e.healthy() for e in self.engines])))
                conn.send_nowait(m.encode(m.Load([e.load_metrics() for e in self.engines])))
            except ConnectionError:
                return
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_rx > 3 * interval:
                log.warning("no heartbeat from the server for %.1fs", 3 * interval)
                return

    async def _read_loop(self, conn: FramedConnection) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = m.decode(await conn.recv())
                self.last_rx = time.monotonic()
                t = type(msg)
                if t is m.Generate:
                    if 0 <= msg.instance < len(self.engines):
                        self.tasks[msg.stream] = loop.create_task(
                            self._stream(conn, msg.stream, self.engines[msg.instance], msg.request))
                    else:
                        conn.send_nowait(m.encode(m.StreamFailed(msg.stream, f"no instance {msg.instance}", False)))
                elif t is m.Embed:
                    if 0 <= msg.instance < len(self.engines):
                        self.tasks[msg.stream] = loop.create_task(
                            self._embed(conn, msg.stream, self.engines[msg.instance], msg.request))
                    else:
                        conn.send_nowait(m.encode(m.StreamFailed(msg.stream, f"no instance {msg.instance}", False)))
                elif t is m.GenerateMedia:
                    if 0 <= msg.instance < len(self.engines):
                        self.tasks[msg.stream] = loop.create_task(
                            self._media(conn, msg.stream, self.engines[msg.instance], msg.request))
                    else:
                        conn.send_nowait(m.encode(m.StreamFailed(msg.stream, f"no instance {msg.instance}", False)))
                elif t is m.LoadLora or t is m.UnloadLora:
                    if 0 <= msg.instance < len(self.engines):
                        self.tasks[msg.stream] = loop.create_task(self._lora(conn, msg))
                    else:
                        conn.send_nowait(m.encode(m.StreamFailed(msg.stream, f"no instance {msg.instance}", False)))
                elif t is m.Abort:
                    task = self.tasks.pop(msg.stream, None)
                    if task is not None:
                        task.cancel()
                elif t is m.SnapshotRequest:
                    eng = self.engines[msg.instance]
                    conn.send_nowait(m.encode(m.Snapshot(msg.instance,
                                                         [m.batch_to_wire(b) for b in eng.kv_snapshot()])))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return

    async def _stream(self, conn: FramedConnection, sid: int, engine: Any, req: EngineRequest) -> None:
        encode, out_msg = m.encode, m.output_message
        try:
            async with contextlib.aclosing(engine.generate(req)) as gen:
                async for out in gen:
                    await conn.send(encode(out_msg(sid, out)))
                    if out.finish_reason is not None:
                        return
            conn.send_nowait(encode(m.StreamFailed(sid, "engine stream ended without a finish reason", True)))
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return
        except Exception as exc:  # report engine failures to the server, which may migrate the request
            with contextlib.suppress(ConnectionError):
                conn.send_nowait(encode(failure(sid, exc)))
        finally:
            self.tasks.pop(sid, None)

    async def _embed(self, conn: FramedConnection, sid: int, engine: Any, req: EmbeddingRequest) -> None:
        try:
            out = await engine.embed(req)
            await conn.send(m.encode(m.embedded_message(sid, out)))
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return
        except Exception as exc:  # reported like a failed stream: the server may retry on another instance
            with contextlib.suppress(ConnectionError):
                conn.send_nowait(m.encode(failure(sid, exc)))
        finally:
            self.tasks.pop(sid, None)

    async def _media(self, conn: FramedConnection, sid: int, engine: Any, req: MediaRequest) -> None:
        """Stream a media request's progress, then its files in chunks and the MediaDone; cancelling the task
        (Abort) closes the generator, which stops at its next step."""
        encode = m.encode
        chunk = min(m.MEDIA_CHUNK_BYTES, conn.max_frame // 2)  # a chunk frame stays well inside the frame limit
        try:
            async with contextlib.aclosing(engine.generate_media(req)) as gen:
                async for item in gen:
                    if type(item) is MediaProgress:
                        await conn.send(encode(m.MediaStep(sid, item.step, item.total_steps)))
                    elif type(item) is MediaOutput:
                        for msg in m.media_messages(sid, item, chunk):
                            await conn.send(encode(msg))
                        return
                    else:
                        raise TypeError(f"generate_media yielded a {type(item).__name__}, not MediaProgress / "
                                        f"MediaOutput")
            conn.send_nowait(encode(m.StreamFailed(sid, "media generator ended without a MediaOutput", True)))
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return
        except Exception as exc:  # reported like a failed stream: the server may retry on another instance
            with contextlib.suppress(ConnectionError):
                conn.send_nowait(encode(failure(sid, exc)))
        finally:
            self.tasks.pop(sid, None)

    async def _lora(self, conn: FramedConnection, msg: m.LoadLora | m.UnloadLora) -> None:
        """Load (files written to a local directory first) or unload an adapter on one instance."""
        sid = msg.stream
        engine = self.engines[msg.instance]
        try:
            if not getattr(engine.model_card(), "supports_lora", False) or not hasattr(engine, "load_lora"):
                raise EngineError("this instance's engine does not serve LoRA adapters", retryable=False)
            if type(msg) is m.LoadLora:
                try:
                    path = await asyncio.get_running_loop().run_in_executor(
                        None, self.lora_files.write, msg.instance, msg.name, msg.lora_id, msg.files)
                except (ValueError, OSError) as exc:
                    raise EngineError(f"cannot store adapter files: {exc}", retryable=False) from None
                await engine.load_lora(LoraAdapter(msg.name, msg.lora_id, path))
            else:
                await engine.unload_lora(msg.name)
                self.lora_files.remove(msg.instance, msg.name, None)
            await conn.send(m.encode(m.LoraDone(sid)))
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return
        except Exception as exc:
            with contextlib.suppress(ConnectionError):
                conn.send_nowait(m.encode(failure(sid, exc)))
        finally:
            self.tasks.pop(sid, None)

    async def stop_engines(self) -> None:
        await stop_all(self.engines)
        self.lora_files.close()


async def run_worker(settings: Settings, plugins: Any) -> int:
    """Entry of `dynamo-mono worker`: start engines, then serve the server until SIGTERM/SIGINT."""
    worker = Worker(settings, plugins)
    await worker.start_engines()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    try:
        return await worker.run()
    finally:
        await worker.stop_engines()
