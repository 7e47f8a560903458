"""Length-prefixed frames over asyncio streams: TCP_NODELAY, bounded frames, bounded send buffers."""

from __future__ import annotations

import asyncio
import socket
import struct

_HDR = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class FrameTooLarge(ConnectionError):
    """The peer announced a frame above the limit; the connection was closed without buffering it."""


class SendBufferFull(ConnectionError):
    """The peer does not read fast enough and the bounded send buffer overflowed; the connection was closed."""


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class FramedConnection:
    """One framed byte stream. send() waits for the peer above the high-water mark (backpressure);
    send_nowait() never waits, and closes the connection when the hard limit is crossed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 max_frame: int = DEFAULT_MAX_FRAME, high_water: int = 1 << 20,
                 hard_limit: int | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.max_frame = max_frame
        self.high_water = high_water
        self.hard_limit = hard_limit if hard_limit is not None else max(64 << 20, 4 * max_frame)
        self.closed = False
        set_nodelay(writer)
        writer.transport.set_write_buffer_limits(high=high_water)
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def recv(self) -> bytes:
        """The next frame's payload; IncompleteReadError/ConnectionError at end of stream."""
        hdr = await self.reader.readexactly(4)
        (n,) = _HDR.unpack(hdr)
        if n > self.max_frame:
            self.close()
            raise FrameTooLarge(f"frame of {n} bytes from {self.peer} exceeds --max-frame-size={self.max_frame}")
        return await self.reader.readexactly(n)

    def send_nowait(self, payload: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("connection closed")
        if len(payload) > self.max_frame:
            raise FrameTooLarge(f"refusing to send a frame of {len(payload)} bytes (limit {self.max_frame})")
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            raise ConnectionResetError("connection closed")
        if transport.get_write_buffer_size() > self.hard_limit:
            self.close()
            raise SendBufferFull(f"peer {self.peer} is not reading; send buffer over {self.hard_limit} bytes")
        self.writer.writelines((_HDR.pack(len(payload)), payload))

    async def send(self, payload: bytes) -> None:
        self.send_nowait(payload)
        if self.writer.transport.get_write_buffer_size() > self.high_water:
            await self.writer.drain()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def wait_closed(self) -> None:
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass
