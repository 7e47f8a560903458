"""The one request path of every model route: tracking, admission, timeout, stream or unary, errors.

A route parses its protocol, builds the work as a coroutine that returns a Generation, and hands it here with
an encoder that turns Steps into its protocol's bytes. The protocol-neutral part (tracking, build, admission,
timeout, finish) is serving/request.py's ServedRequest, which other frontends (gRPC) share; everything else — in-flight and request metrics,
admission and priority queues, routing preconditions, the request timeout, cancellation when the client goes
away (aiohttp cancels the handler; closing the step iterator aborts the engine request), and mapping failures
to HTTP statuses or in-stream error events — happens here, the same way for every API. Routes whose work is
one result rather than a stream of steps (embeddings) build a UnaryJob and go through `serve_unary`, which
shares the tracking, admission, timeout and error mapping.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Protocol

from aiohttp import web

from dynamo_mono.http.errors import REQUEST_FAILURES, http_error_type, to_api_error
from dynamo_mono.http.sse import EventStream, open_stream
from dynamo_mono.http.state import ServerState
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.choice import Step
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.request import ServedRequest

PING_INTERVAL_S = 10.0  # seconds without output before another keep-alive event, until the first token


class StreamEncoder(Protocol):
    """Turns a generation into one protocol's event-stream bytes."""

    ping: bytes | None  # keep-alive event sent every PING_INTERVAL_S until the first token; None = none

    def open(self, gen: Generation) -> bytes:
        """Bytes sent as soon as the stream is open (may be empty)."""

    def step(self, step: Step) -> bytes:
        """Bytes for one step (may be empty)."""

    def close(self, gen: Generation) -> bytes:
        """Bytes after the last step (final events, usage, terminator)."""

    def error(self, err: ApiError) -> bytes:
        """The in-stream error event(s) for a failure after the stream started."""


class UnaryEncoder(Protocol):
    """Collects a generation's steps into one protocol's JSON response."""

    def open(self, gen: Generation) -> None: ...

    def step(self, step: Step) -> None: ...

    def response(self, gen: Generation) -> web.Response: ...


class UnaryJob(Protocol):
    """Work that ends in one result (an embeddings request): admitted, run, finished like a Generation."""

    async def admit(self) -> None:
        """Routing preconditions and admission queues; raises before any engine work."""

    async def run(self) -> Any:
        """The result the route's `respond` turns into a response."""

    def finish(self) -> None:
        """Release admission slots and record metrics (idempotent)."""


async def serve_unary(request: web.Request, state: ServerState, model: ServedModel, *, endpoint: str,
                      build: Coroutine[Any, Any, UnaryJob],
                      respond: Callable[[Any], web.Response | Awaitable[web.Response]]) -> web.Response:
    """Run one non-streaming, non-generating API request end to end: the same tracking, admission, request
    timeout and error mapping as serve_generation; `respond(result)` builds the response (a coroutine when it
    has I/O to do, e.g. storing media)."""
    try:
        async with ServedRequest(state, model.name, endpoint=endpoint, stream=False, build=build,
                                 classify=http_error_type) as served:
            async with served.deadline():
                result = await served.work.run()
            response = respond(result)
            return await response if inspect.isawaitable(response) else response
    except REQUEST_FAILURES as exc:
        raise to_api_error(exc) from None


def serve_generation(request: web.Request, state: ServerState, model: ServedModel, *, endpoint: str,
                     stream: bool, build: Coroutine[Any, Any, Generation],
                     encoder: StreamEncoder | UnaryEncoder) -> Coroutine[Any, Any, web.StreamResponse]:
    """Run one API request end to end; `build` (template, tokenization, ...) runs inside the tracking.

    Returns the coroutine the handler awaits (the stream's loop is one coroutine below the handler: every
    engine step resumes each frame of the chain, so no frame is added in between)."""
    if stream:
        return _serve_stream(request, state, model, endpoint, build, encoder)  # type: ignore[arg-type]
    return _serve_unary(state, model, endpoint, build, encoder)  # type: ignore[arg-type]


async def _serve_unary(state: ServerState, model: ServedModel, endpoint: str, build: Coroutine[Any, Any, Generation],
                       enc: UnaryEncoder) -> web.Response:
    try:
        async with ServedRequest(state, model.name, endpoint=endpoint, stream=False, build=build,
                                 classify=http_error_type) as served:
            gen = served.work
            enc.open(gen)
            async with served.deadline():
                async for step in gen.steps():
                    enc.step(step)
            return enc.response(gen)
    except REQUEST_FAILURES as exc:
        raise to_api_error(exc) from None


async def _first_pull(it: AsyncIterator[Step]) -> asyncio.Future:
    """Start the first pull; refusals raised before it first waits (no capacity, a bad pin) still become an
    HTTP status instead of an error event inside a stream."""
    task = asyncio.ensure_future(it.__anext__())
    try:
        await asyncio.wait({task}, timeout=0)
    except asyncio.CancelledError:  # client gone: stop the pull, or closing `it` finds it still running
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    if task.done() and not task.cancelled():
        exc = task.exception()
        if isinstance(exc, REQUEST_FAILURES):
            raise to_api_error(exc)
    return task


async def _serve_stream(request: web.Request, state: ServerState, model: ServedModel, endpoint: str,
                        build: Coroutine[Any, Any, Generation], enc: StreamEncoder) -> web.StreamResponse:
    try:
        async with ServedRequest(state, model.name, endpoint=endpoint, stream=True, build=build,
                                 classify=http_error_type) as served:
            gen = served.work
            it = gen.steps()
            pending: asyncio.Future | None = None
            stream: EventStream | None = None
            try:
                ping = enc.ping
                if ping is not None:  # keep-alive protocol: refusals still become a status, then ping until output
                    pending = await _first_pull(it)
                stream = await open_stream(request)
                send = stream.send
                head = enc.open(gen)
                if head:
                    await send(head)
                async with served.deadline():
                    while pending is not None:  # until the first token: wait on the pull, pinging meanwhile
                        task = pending
                        while not (await asyncio.wait({task}, timeout=PING_INTERVAL_S))[0]:
                            await send(ping)
                        pending = None
                        try:
                            step = task.result()
                        except StopAsyncIteration:
                            break
                        data = enc.step(step)
                        if data:
                            await send(data)
                        if not step.num_tokens and step.finish_reason is None:
                            pending = asyncio.ensure_future(it.__anext__())
                    step_of = enc.step
                    async for step in it:
                        data = step_of(step)
                        if data:
                            await send(data)
                await send(enc.close(gen))
            except REQUEST_FAILURES as exc:
                err = to_api_error(exc)
                if stream is None:
                    raise err from None
                served.tracker.fail(err.code or f"http_{err.status}")
                await stream.send(enc.error(err))
            finally:
                if pending is not None:
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)
                await it.aclose()
            return stream.response
    except REQUEST_FAILURES as exc:
        raise to_api_error(exc) from None
