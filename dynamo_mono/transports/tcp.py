"""The built-in `tcp` transport: framed control connections (connect with backoff) and bulk KV transfer."""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Callable

import msgspec

from dynamo_mono.engine import KvEndpoint
from dynamo_mono.transports.framing import DEFAULT_MAX_FRAME, FramedConnection
from dynamo_mono.transports.kv import KvTransferError, Published

CHUNK = 1 << 20
_REPLY = struct.Struct(">BQ")  # status (0 ok, 1 missing), payload length


async def connect(host: str, port: int, *, max_frame: int = DEFAULT_MAX_FRAME, attempts: int = 1,
                  backoff: float = 0.1, backoff_max: float = 5.0) -> FramedConnection:
    """Open a framed connection, retrying with capped exponential backoff."""
    delay = backoff
    for i in range(attempts):
        try:
            reader, writer = await asyncio.open_connection(host, port)
            return FramedConnection(reader, writer, max_frame=max_frame)
        except OSError:
            if i == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff_max)
    raise ConnectionError("unreachable")


class TcpKvTransport:
    """KV buffers over plain TCP: a request frame names the key; the reply is a header and the raw bytes."""

    name = "tcp"

    def __init__(self, host: str = "127.0.0.1", advertise: str | None = None, ttl: float = 60.0,
                 max_frame: int = DEFAULT_MAX_FRAME, **_: Any) -> None:
        self.host = host
        self.advertise = advertise or host
        self.max_frame = max_frame
        self.published = Published(ttl)
        self._server: asyncio.base_events.Server | None = None
        self._idle: dict[tuple[str, int], list[FramedConnection]] = {}
        self._handlers: set[FramedConnection] = set()  # server-side connections, closed on stop()
        self.port = 0

    async def start(self) -> KvEndpoint:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return KvEndpoint("tcp", self.advertise, self.port)

    def publish(self, key: str, buf: bytearray, on_done: Callable[[], None] | None = None) -> None:
        self.published.put(key, buf, on_done)

    def release(self, key: str) -> None:
        self.published.pop(key)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = FramedConnection(reader, writer, max_frame=4096, high_water=4 << 20)
        self._handlers.add(conn)
        try:
            while True:
                key = msgspec.msgpack.decode(await conn.recv(), type=str)
                buf = self.published.take(key)
                if buf is None:
                    writer.write(_REPLY.pack(1, 0))
                    continue
                writer.write(_REPLY.pack(0, len(buf)))
                view = memoryview(buf)
                for off in range(0, len(buf), CHUNK):
                    writer.write(view[off:off + CHUNK])
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, msgspec.DecodeError):
            pass
        finally:
            conn.close()
            self._handlers.discard(conn)

    async def fetch(self, endpoint: KvEndpoint, key: str, nbytes: int) -> bytearray:
        addr = (endpoint.host, endpoint.port)
        idle = self._idle.setdefault(addr, [])
        conn = idle.pop() if idle else None
        try:
            if conn is None or conn.closed:
                conn = await connect(*addr, max_frame=self.max_frame)
            conn.send_nowait(msgspec.msgpack.encode(key))
            status, n = _REPLY.unpack(await conn.reader.readexactly(_REPLY.size))
            if status != 0:
                raise KvTransferError(f"KV buffer {key!r} is not held by {addr[0]}:{addr[1]} (expired or fetched)")
            if n != nbytes:
                raise KvTransferError(f"KV buffer {key!r}: expected {nbytes} bytes, peer holds {n}")
            out = bytearray(n)
            view = memoryview(out)
            off = 0
            read = conn.reader.read
            while off < n:
                chunk = await read(min(CHUNK * 4, n - off))
                if not chunk:
                    raise KvTransferError(f"KV peer {addr[0]}:{addr[1]} closed mid-transfer")
                view[off:off + len(chunk)] = chunk
                off += len(chunk)
        except (OSError, asyncio.IncompleteReadError) as exc:
            if conn is not None:
                conn.close()
            raise KvTransferError(f"KV fetch from {addr[0]}:{addr[1]} failed: {exc}") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        idle.append(conn)
        return out

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conns in self._idle.values():
            for c in conns:
                c.close()
        self._idle.clear()
        for c in list(self._handlers):
            c.close()
        await asyncio.sleep(0)  # let the handlers see the close and return
