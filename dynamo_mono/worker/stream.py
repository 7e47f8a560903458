"""Per-request stream plumbing shared by WorkerSession and RemoteEngine, so neither imports the other."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol


class StreamBuffer:
    """Outputs of one remote request, buffered until the consumer takes them."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque = deque()
        self.waiter: asyncio.Future | None = None

    def push(self, item: object) -> None:
        self.items.append(item)
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)


class StreamHost(Protocol):
    """What a RemoteEngine needs from its worker connection (implemented by WorkerSession)."""

    name: str
    alive: bool

    def open_stream(self, request_id: str) -> tuple[int, StreamBuffer]: ...

    def close_stream(self, sid: int, *, abort: bool) -> None: ...

    def streams_of(self, request_id: str) -> list[int]: ...

    def abort_stream(self, sid: int) -> None: ...

    def send_nowait(self, msg: object) -> None: ...
