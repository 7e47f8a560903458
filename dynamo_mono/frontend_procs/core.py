"""The core of `serve --api-server-count N`: holds the public port, starts N HTTP processes on it and restarts
any that dies, serves their link (core_link) and the routes they forward (its own app on a Unix socket), and
answers /metrics for all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from dynamo_mono.config import ConfigError
from dynamo_mono.frontend_procs import messages as lm
from dynamo_mono.frontend_procs.core_link import CoreLink
from dynamo_mono.frontend_procs.http_proc import BOOT_ENV, Boot
from dynamo_mono.frontend_procs.metrics_merge import merged_exposition

log = logging.getLogger("dynamo_mono.frontend_procs.core")


def api_server_count(settings: Any) -> int:
    """--api-server-count, 0 = auto: a quarter of the usable cores, between 1 and 8 (engines and the core need
    cores too; 1 below 8 cores)."""
    n = settings.get("api_server_count") or 0
    if n > 0:
        return n
    if sys.argv[1:2] != ["serve"]:  # serve() called in-process (tests, embedding): the processes need the command
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 4))


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket: fixes the port (also for --port 0) and fails early when it
    is taken; the HTTP processes listen on it beside this one."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot bind {host}:{port}: {exc}") from None
    return sock


class HttpProcesses:
    """N HTTP processes around this core process."""

    RESTART_DELAY_MAX_S = 5.0

    def __init__(self, state: Any, runner: web.AppRunner, settings: Any, count: int,
                 argv: list[str] | None = None) -> None:
        self.state = state
        self.runner = runner
        self.settings = settings
        self.count = count
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.dir = tempfile.mkdtemp(prefix="dynamo-mono-")
        self.link = CoreLink(state, os.path.join(self.dir, "link.sock"), max_frame=settings.max_frame_size,
                             on_listening=self._listening)
        self.core_path = os.path.join(self.dir, "core.sock")
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        reg = state.metrics.registry
        self.restarts = Counter("dynamo_frontend_api_server_restarts", "HTTP processes restarted after they died",
                                registry=reg)
        self.listening = Gauge("dynamo_frontend_api_servers", "HTTP processes accepting on the port", registry=reg)
        self._listening_now: set[int] = set()
        self._all_listening = asyncio.Event()
        self._stopping = False
        self._watchers: list[asyncio.Task] = []
        self._sock: socket.socket | None = None
        self.port = 0

    def _listening(self, index: int) -> None:
        self._listening_now.add(index)
        self.listening.set(len(self._listening_now))
        if len(self._listening_now) >= self.count:
            self._all_listening.set()

    async def start(self) -> tuple[str, int]:
        """Reserve the port, open the core's sockets, start the processes; returns (host, port) once every process
        accepts. ConfigError when one exits first."""
        if not self.argv or self.argv[0] != "serve":
            raise ConfigError("--api-server-count > 1 needs the server started as `dynamo-mono serve ...`")
        s = self.settings
        self._sock = _reserve_port(s.host, s.port)
        host, self.port = self._sock.getsockname()[:2]
        await web.UnixSite(self.runner, self.core_path).start()
        await self.link.start()
        self.state.metrics_merge = self.merged_metrics
        for i in range(self.count):
            await self._spawn(i)
        exits = [asyncio.ensure_future(p.wait()) for p in self.procs.values()]
        ready = asyncio.ensure_future(self._all_listening.wait())
        done, _ = await asyncio.wait({ready, *exits}, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            bad = next(i for i, p in self.procs.items() if p.returncode is not None)
            await self.stop(0)
            raise ConfigError(f"HTTP process {bad} exited with code {self.procs[bad].returncode} while starting")
        for e in exits:
            e.cancel()
        self._watchers = [asyncio.ensure_future(self._watch(i)) for i in range(self.count)]
        return host, self.port

    async def _spawn(self, index: int) -> None:
        boot = Boot(link=self.link.path, core=self.core_path, port=self.port, index=index)
        env = dict(os.environ, **{BOOT_ENV: boot.to_env()})
        self.procs[index] = await asyncio.create_subprocess_exec(sys.executable, "-m", "dynamo_mono.cli", *self.argv,
                                                                 env=env)

    async def _watch(self, index: int) -> None:
        """Restart process `index` whenever it dies (its link's requests were aborted when the link closed)."""
        failures = 0
        while True:
            proc = self.procs[index]
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            self._listening_now.discard(index)
            self.listening.set(len(self._listening_now))
            self.restarts.inc()
            failures = failures + 1 if time.monotonic() - started < 5.0 else 0
            delay = min(self.RESTART_DELAY_MAX_S, 0.1 * (2 ** failures)) if failures else 0.0
            log.warning("HTTP process %d (pid %d) exited with code %s; restarting it%s", index, proc.pid, code,
                        f" in {delay:.1f}s" if delay else "")
            if delay:
                await asyncio.sleep(delay)
            await self._spawn(index)

    async def merged_metrics(self, own: Any) -> bytes:
        """/metrics: the core's registry plus every HTTP process's, summed."""
        return merged_exposition(own, await self.link.pull_metrics())

    @property
    def inflight(self) -> int:
        """The HTTP processes' API requests running in this core."""
        return self.link.inflight

    def drain(self) -> None:
        """Every HTTP process refuses new work from now on (and keeps answering, as one server would)."""
        self._stopping = True
        frame = lm.encode(lm.Drain())
        for c in list(self.link.conns.values()):
            if c.alive:
                with contextlib.suppress(ConnectionError):
                    c.conn.send_nowait(frame)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.returncode is None]

    async def stop(self, timeout: float) -> None:
        """SIGTERM every process (each drains its requests up to --shutdown-timeout), wait up to timeout, then
        kill what is left; close the sockets."""
        self._stopping = True
        for w in self._watchers:
            w.cancel()
        for p in self.procs.values():
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        waits = [p.wait() for p in self.procs.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout + 2.0)
        except asyncio.TimeoutError:
            for p in self.procs.values():
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            await asyncio.gather(*(p.wait() for p in self.procs.values()))
        await self.link.stop()
        if self._sock is not None:
            self._sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
