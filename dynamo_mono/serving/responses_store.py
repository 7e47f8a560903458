"""Bounded in-memory store of Responses API responses: lookup for chaining and GET, background tasks, eviction.

At most `size` responses are kept. A finished response (completed, incomplete, failed, cancelled) expires `ttl`
seconds after it finished and is evicted, oldest first, when room is needed; a response still running (queued or
in progress) is never evicted, so a store full of running responses refuses new stored ones (QueueFull → 429).
Background responses run in tasks the store owns: cancelling one ends its generation (the admission slot and
the engine request are freed by the request path when the task is cancelled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Protocol

from dynamo_mono.serving.errors import InvalidRequest, QueueFull

log = logging.getLogger("dynamo_mono.responses")

RUNNING = ("queued", "in_progress")
FINISHED = ("completed", "incomplete", "failed", "cancelled")


class OutputSource(Protocol):
    """What produces a running response's output items (the route's assembler)."""

    def items(self) -> list[dict]: ...


@dataclass(eq=False)
class StoredResponse:
    """One response: what the request asked (echoed fields), its conversation, its output and its state."""

    id: str
    body: dict[str, Any]  # the response object's request-derived fields (model, instructions, tools, ...)
    items: list[dict]  # the conversation before the output: previous chain + this request's input items
    background: bool = False
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "queued"
    source: OutputSource | None = None  # live output while running; None once `output` is final
    output: list[dict] = field(default_factory=list)
    usage: dict | None = None
    error: dict | None = None
    incomplete_details: dict | None = None
    completed_at: int | None = None
    finished_at: float | None = None  # store clock, for the ttl
    task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    @property
    def started(self) -> bool:
        return self.status != "queued"

    def output_items(self) -> list[dict]:
        return self.source.items() if self.source is not None else self.output

    def conversation(self) -> list[dict]:
        """Input and output items: what a response chained to this one continues from."""
        return [*self.items, *self.output_items()]

    def snapshot(self) -> dict[str, Any]:
        """The response object as the API returns it now."""
        return {"id": self.id, "object": "response", "created_at": self.created_at, "status": self.status,
                "background": self.background, "error": self.error, "incomplete_details": self.incomplete_details,
                "output": self.output_items(), "usage": self.usage, "completed_at": self.completed_at, **self.body}


class ResponsesStore:
    """Responses by id, bounded by count and age; owner of the background generation tasks."""

    def __init__(self, size: int, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rid: str) -> bool:
        return self.get(rid) is not None

    # --- entries --------------------------------------------------------------------------------
    def add(self, rec: StoredResponse) -> None:
        """Keep `rec` (evicting expired, then the oldest finished responses); QueueFull when every entry is
        still running."""
        self._expire()
        while len(self._entries) >= self.size:
            oldest = next((r for r in self._entries.values() if not r.running), None)
            if oldest is None:
                raise QueueFull(f"the responses store holds {len(self._entries)} responses still in progress "
                                f"(--responses-store-size {self.size}); try again later")
            del self._entries[oldest.id]
        self._entries[rec.id] = rec

    def get(self, rid: str) -> StoredResponse | None:
        rec = self._entries.get(rid)
        if rec is not None and self._expired(rec):
            del self._entries[rid]
            return None
        return rec

    def delete(self, rid: str) -> StoredResponse | None:
        """Forget a response; a running background one is cancelled."""
        rec = self._entries.pop(rid, None)
        if rec is not None and rec.task is not None and not rec.task.done():
            rec.task.cancel()
        return rec

    def discard(self, rec: StoredResponse) -> None:
        """Forget a response that never started (its request was refused)."""
        if self._entries.get(rec.id) is rec:
            del self._entries[rec.id]

    def _expired(self, rec: StoredResponse) -> bool:
        return rec.finished_at is not None and self.clock() - rec.finished_at >= self.ttl

    def _expire(self) -> None:
        for rid in [rid for rid, r in self._entries.items() if self._expired(r)]:
            del self._entries[rid]

    # --- lifecycle ------------------------------------------------------------------------------
    def finish(self, rec: StoredResponse, status: str, *, usage: dict | None = None,
               error: dict | None = None, incomplete_details: dict | None = None) -> None:
        """Settle a response: its output becomes final and its ttl starts."""
        if not rec.running:
            return
        rec.output = rec.output_items()
        rec.source = None
        rec.status = status
        rec.usage = usage if usage is not None else rec.usage
        rec.error = error
        rec.incomplete_details = incomplete_details
        if status == "completed":
            rec.completed_at = int(time.time())
        rec.finished_at = self.clock()

    def abandon(self, rec: StoredResponse, error: dict | None) -> None:
        """The request ended without settling the response: a foreground one that never started is forgotten
        (its client got an error status instead), anything else fails (`error`) or is cancelled."""
        if not rec.running:
            return
        if not rec.started and not rec.background:
            self.discard(rec)
            rec.status = "cancelled"
            return
        self.finish(rec, "failed" if error is not None else "cancelled", error=error)

    def run(self, rec: StoredResponse, work: Coroutine[Any, Any, None]) -> None:
        """Run a background response's generation in a task the store owns."""
        task = asyncio.get_running_loop().create_task(work, name=f"response {rec.id}")
        rec.task = task

        def done(t: asyncio.Task) -> None:
            rec.task = None
            error = None
            if not t.cancelled() and t.exception() is not None:
                log.error("background response %s failed", rec.id, exc_info=t.exception())
                error = {"code": "server_error", "message": "internal server error"}
            self.abandon(rec, error)

        task.add_done_callback(done)

    async def cancel(self, rid: str) -> StoredResponse | None:
        """Cancel a background response (idempotent once cancelled); None if unknown, InvalidRequest if it
        cannot be cancelled."""
        rec = self.get(rid)
        if rec is None:
            return None
        if not rec.background:
            raise InvalidRequest("only background responses can be cancelled", param="response_id")
        if rec.status == "cancelled":
            return rec
        if not rec.running:
            raise InvalidRequest(f"response {rid} is already {rec.status}; only a queued or in-progress background "
                                 "response can be cancelled", param="response_id")
        task = rec.task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.abandon(rec, None)
        return rec

    async def close(self) -> None:
        """Cancel every background task (server shutdown)."""
        tasks = [r.task for r in self._entries.values() if r.task is not None and not r.task.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
