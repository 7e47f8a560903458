"""The protocol-neutral life of one API request, shared by every frontend (HTTP, gRPC, ...).

    async with ServedRequest(state, model.name, endpoint="...", stream=..., build=build, classify=...) as served:
        async with served.deadline():
            async for step in served.work.steps(): ...

Entering tracks the request (in-flight gauge, requests_started by endpoint), awaits the protocol's `build`
coroutine (template, tokenization; it returns a Generation, or any work with `admit()` / `finish()` such as an
embeddings job) and admits it (routing preconditions, admission queues); leaving finishes it (slots released,
latency metrics) and records how it ended (requests_total by status and the transport's error label). Failures
propagate as domain errors (serving.errors), EngineError or TimeoutError: the transport maps them to its own
statuses (http/errors.py, the gRPC plugin's status codes) — REQUEST_FAILURES lists them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Generic, Protocol, TypeVar

from dynamo_mono.engine import EngineError
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.errors import ServingError
from dynamo_mono.serving.tracking import Classify, RequestTracker

# Everything a request may raise that ends it with a client-visible error.
REQUEST_FAILURES = (ApiError, ServingError, EngineError, TimeoutError)


class Work(Protocol):
    """What a build returns: admitted before any engine work, finished once (idempotent)."""

    async def admit(self) -> None: ...

    def finish(self) -> None: ...


W = TypeVar("W", bound=Work)


class ServedRequest(Generic[W]):
    """Async context manager around one request: tracking, build, admission on entry; finish on exit."""

    __slots__ = ("state", "tracker", "build", "work")

    def __init__(self, state: Any, model: str, *, endpoint: str, stream: bool, build: Coroutine[Any, Any, W],
                 classify: Classify) -> None:
        self.state = state
        self.tracker = RequestTracker(state, model, endpoint, stream, classify)
        self.build: Coroutine[Any, Any, W] | None = build
        self.work: W | None = None

    async def __aenter__(self) -> "ServedRequest[W]":
        self.tracker.__enter__()
        build = self.build
        self.build = None
        try:
            try:
                self.work = await build  # type: ignore[misc]
            finally:
                build.close()  # type: ignore[union-attr]  # no-op once awaited; a never-started build must not warn
            await self.work.admit()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        try:
            if self.work is not None:
                self.work.finish()
        finally:
            self.tracker.__exit__(exc_type, exc, tb)

    def deadline(self) -> asyncio.Timeout:
        """The request timeout (--request-timeout) as an `async with` block; TimeoutError when it runs out."""
        return asyncio.timeout(self.state.settings.request_timeout)
