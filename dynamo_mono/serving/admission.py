"""Admission control: bounded in-flight requests with a priority-ordered waiting queue (429 when full)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from dynamo_mono.serving.errors import QueueFull, QueueTimeout


class AdmissionQueue:
    """At most `limit` holders at once; waiters are served by (priority - latency_sensitivity, arrival).

    Lower priority values are more urgent (the API convention). A waiter whose queue wait would exceed
    `max_wait`, or who arrives when `max_queue` are already waiting, is refused (QueueFull / QueueTimeout).
    """

    def __init__(self, limit: int | None, *, max_queue: int = 1024, max_wait: float | None = None,
                 name: str = "server") -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.name = name
        self.active = 0
        self._heap: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._heap if not f.done())

    async def acquire(self, priority: int = 0, latency_sensitivity: float | None = None) -> None:
        if self.limit is None:
            self.active += 1
            return
        if self.active < self.limit and not self.waiting:
            self.active += 1
            return
        if self.waiting >= self.max_queue:
            raise QueueFull(f"{self.name} queue is full ({self.max_queue} waiting); try again later")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        key = priority - (latency_sensitivity or 0.0)
        heapq.heappush(self._heap, (key, next(self._seq), fut))
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.max_wait)
        except asyncio.TimeoutError:
            if fut.done() and not fut.cancelled():  # granted at the same moment: give the slot back
                self.release()
            fut.cancel()
            raise QueueTimeout(f"request waited {time.monotonic() - started:.1f}s in the {self.name} queue "
                               f"(limit {self.max_wait}s); try again later") from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()
            fut.cancel()
            raise

    def release(self) -> None:
        """Free a slot and hand it to the most urgent live waiter."""
        self.active -= 1
        while self._heap and (self.limit is None or self.active < self.limit):
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                self.active += 1
                fut.set_result(None)
                return


async def pass_queue(queue: AdmissionQueue, priority: int, latency_sensitivity: float | None,
                     queued_gauge=None) -> None:
    """Take a slot of queue; while the request waits for it, queued_gauge (the model's) counts it."""
    if queue.limit is None or (queue.active < queue.limit and not queue.waiting) or queued_gauge is None:
        await queue.acquire(priority, latency_sensitivity)
        return
    queued_gauge.inc()
    try:
        await queue.acquire(priority, latency_sensitivity)
    finally:
        queued_gauge.dec()


class HeldSlots:
    """The admission slots one request holds, taken in order and released together (idempotent)."""

    __slots__ = ("queues", "_held")

    def __init__(self, queues: tuple) -> None:
        self.queues = queues
        self._held: list[AdmissionQueue] = []

    async def take(self, priority: int, queued_gauge=None) -> None:
        for queue in self.queues:
            await pass_queue(queue, priority, None, queued_gauge)
            self._held.append(queue)

    def release(self) -> None:
        while self._held:
            self._held.pop().release()
