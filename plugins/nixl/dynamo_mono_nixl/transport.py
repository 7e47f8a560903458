"""NixlKvTransport: published buffers are NIXL-registered; a peer READs them after a TCP control handshake.

Control connection (framed msgpack over TCP, one per peer pair, from the fetching side):
  ["hello", agent_metadata]      → ["hello", agent_metadata]   (each side adds the other as remote agent)
  ["desc", key]                  → ["desc", addr, nbytes, agent_metadata] | ["missing"]
                                   (metadata again: it carries the remote keys of newly registered memory)
  ["done", key]                  → (no reply) the owner deregisters and releases the buffer
The data itself moves by one NIXL READ of the whole buffer into a registered local buffer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any, Callable

import msgspec
import numpy as np

from dynamo_mono.api import FramedConnection, KvEndpoint, KvTransferError, Published, connect_framed

log = logging.getLogger("dynamo_mono.nixl")

_ids = itertools.count()
_enc = msgspec.msgpack.encode
_dec = msgspec.msgpack.decode
# Poll interval while a READ is in flight: short, since NIXL moves GB/s and a transfer lasts ms.
POLL_S = 0.0002


def _addr(buf: bytearray) -> int:
    return np.frombuffer(buf, dtype=np.uint8).ctypes.data if len(buf) else 0


class NixlKvTransport:
    """KV buffers through NIXL's UCX backend (DRAM here; VRAM works the same with a GPU build)."""

    name = "nixl"

    def __init__(self, host: str = "127.0.0.1", advertise: str | None = None, ttl: float = 60.0,
                 backends: tuple[str, ...] = ("UCX",), **_: Any) -> None:
        os.environ.setdefault("NIXL_LOG_LEVEL", "WARN")
        from dynamo_mono_nixl.loader import import_nixl

        if not import_nixl():
            raise ImportError("NIXL does not import here (pip install nixl-cu12==1.5.1 && pip install --no-deps "
                              "nixl==1.5.1)")
        from nixl._api import nixl_agent, nixl_agent_config

        self.host = host
        self.advertise = advertise or host
        self.agent_name = f"dynamo-mono-{os.getpid()}-{next(_ids)}"
        # No progress thread: it is slow and erratic on small hosts; we poll while transfers run.
        self.agent = nixl_agent(self.agent_name, nixl_agent_config(enable_prog_thread=False, backends=list(backends)))
        self.metadata: bytes = self.agent.get_agent_metadata()
        self.published = Published(ttl)
        self.regs: dict[str, Any] = {}
        self._server: asyncio.base_events.Server | None = None
        self._peers: dict[tuple[str, int], tuple[FramedConnection, str, asyncio.Lock]] = {}
        self._handlers: set[FramedConnection] = set()  # server-side connections, closed on stop()
        self._serving = 0  # READs peers announced ("desc") and have not finished ("done")
        self._pump: asyncio.Task | None = None
        self.port = 0

    async def start(self) -> KvEndpoint:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return KvEndpoint("nixl", self.advertise, self.port, self.agent_name)

    # --- owner side ----------------------------------------------------------------------------
    def publish(self, key: str, buf: bytearray, on_done: Callable[[], None] | None = None) -> None:
        self.regs[key] = self.agent.register_memory([(_addr(buf), len(buf), 0, "")], "DRAM")

        def done() -> None:
            reg = self.regs.pop(key, None)
            if reg is not None:
                self.agent.deregister_memory(reg)
            if on_done is not None:
                on_done()

        self.published.put(key, buf, done)

    def release(self, key: str) -> None:
        self.published.pop(key)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FramedConnection(reader, writer, max_frame=1 << 20)
        self._handlers.add(conn)
        try:
            while True:
                msg = _dec(await conn.recv())
                op = msg[0]
                if op == "hello":
                    self.agent.add_remote_agent(msg[1])
                    await conn.send(_enc(["hello", self.metadata]))
                elif op == "desc":
                    buf = self.published.get(msg[1])
                    reply = ["missing"] if buf is None else ["desc", _addr(buf), len(buf),
                                                             self.agent.get_agent_metadata()]
                    if buf is not None:
                        self._begin_serving()
                    await conn.send(_enc(reply))
                elif op == "done":
                    if self.published.get(msg[1]) is not None:
                        self._serving = max(0, self._serving - 1)
                    self.published.take(msg[1])
        except (asyncio.IncompleteReadError, ConnectionError, OSError, msgspec.DecodeError):
            pass
        finally:
            conn.close()
            self._handlers.discard(conn)

    def _begin_serving(self) -> None:
        """Without a progress thread the target side must be progressed while a peer READs from it."""
        self._serving += 1
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._progress())

    async def _progress(self) -> None:
        idle_until = None
        loop = asyncio.get_running_loop()
        while True:
            self.agent.get_new_notifs()
            if self._serving <= 0:
                return
            await asyncio.sleep(POLL_S)
            # A peer that vanished mid-transfer never says "done": stop pumping after a while.
            if not self._handlers:
                idle_until = idle_until or loop.time() + 5.0
                if loop.time() > idle_until:
                    self._serving = 0

    # --- fetching side -------------------------------------------------------------------------
    async def _peer(self, endpoint: KvEndpoint) -> tuple[FramedConnection, str, asyncio.Lock]:
        addr = (endpoint.host, endpoint.port)
        peer = self._peers.get(addr)
        if peer is not None and not peer[0].closed:
            return peer
        conn = await connect_framed(*addr, max_frame=1 << 20)
        await conn.send(_enc(["hello", self.metadata]))
        reply = _dec(await asyncio.wait_for(conn.recv(), 10))
        remote = self.agent.add_remote_agent(reply[1])
        remote = remote.decode() if isinstance(remote, bytes) else remote
        peer = (conn, remote, asyncio.Lock())
        self._peers[addr] = peer
        return peer

    async def fetch(self, endpoint: KvEndpoint, key: str, nbytes: int) -> bytearray:
        try:
            conn, remote, lock = await self._peer(endpoint)
            async with lock:  # one request/reply at a time on the control connection
                await conn.send(_enc(["desc", key]))
                reply = _dec(await asyncio.wait_for(conn.recv(), 10))
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            self._peers.pop((endpoint.host, endpoint.port), None)
            raise KvTransferError(f"NIXL control connection to {endpoint.host}:{endpoint.port} failed: "
                                  f"{exc or type(exc).__name__}") from None
        if reply[0] != "desc":
            raise KvTransferError(f"KV buffer {key!r} is not held by agent {endpoint.agent} "
                                  f"(expired or fetched)")
        raddr, n = reply[1], reply[2]
        self.agent.add_remote_agent(reply[3])
        if n != nbytes:
            raise KvTransferError(f"KV buffer {key!r}: expected {nbytes} bytes, peer holds {n}")
        out = bytearray(n)
        if n:
            await self._read(out, raddr, n, remote)
        try:
            conn.send_nowait(_enc(["done", key]))
        except ConnectionError:
            pass
        return out

    async def _read(self, out: bytearray, raddr: int, n: int, remote: str) -> None:
        agent = self.agent
        laddr = _addr(out)
        reg = agent.register_memory([(laddr, n, 0, "")], "DRAM")
        handle = None
        try:
            local = agent.get_xfer_descs([(laddr, n, 0)], "DRAM")
            far = agent.get_xfer_descs([(raddr, n, 0)], "DRAM")
            handle = agent.initialize_xfer("READ", local, far, remote)
            state = agent.transfer(handle)
            while state == "PROC":
                await asyncio.sleep(POLL_S)
                state = agent.check_xfer_state(handle)
            if state != "DONE":
                raise KvTransferError(f"NIXL READ from {remote} failed ({state})")
        finally:
            if handle is not None:
                agent.release_xfer_handle(handle)
            agent.deregister_memory(reg)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn, _, _ in self._peers.values():
            conn.close()
        self._peers.clear()
        for c in list(self._handlers):
            c.close()
        await asyncio.sleep(0)  # let the handlers see the close and return
        if self._pump is not None:
            self._pump.cancel()
        for key in list(self.published.items):
            self.published.pop(key)
