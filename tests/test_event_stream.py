"""EventStream: every event reaches a slow client intact and in order, and the server's buffer stays bounded."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from conformance.waits import wait_until
from dynamo_mono.http.sse import _HIGH_WATER, open_stream

EVENTS = 1500
PAYLOAD = b"x" * 8000  # 12 MB in all: more than the kernel's loopback socket buffers hold


async def test_slow_client_gets_every_event_and_server_buffer_stays_bounded(aiohttp_client) -> None:
    peak = 0
    transports: list = []

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal peak
        transports.append(request.transport)
        stream = await open_stream(request)
        for i in range(EVENTS):
            await stream.send(b"data: %d %b\n\n" % (i, PAYLOAD))
            peak = max(peak, request.transport.get_write_buffer_size())
        return stream.response

    app = web.Application()
    app.router.add_get("/s", handler)
    client = await aiohttp_client(app)
    async with client.get("/s") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        # The client reads nothing until the kernel's buffers are full and the server holds more than the
        # high-water mark: the server is now waiting for the client (in drain) instead of queueing more.
        await wait_until(lambda: transports and transports[0].get_write_buffer_size() > _HIGH_WATER,
                         "the server to wait for the slow client")
        body = await resp.read()
    events = body.split(b"\n\n")[:-1]
    assert [int(e.split(b" ")[1]) for e in events] == list(range(EVENTS))
    assert all(e.endswith(PAYLOAD) for e in events)
    assert peak <= _HIGH_WATER + len(PAYLOAD) + 64  # waited for the client instead of queueing 12 MB


async def test_send_after_client_left_raises_connection_reset() -> None:
    """Without handler cancellation (our server cancels handlers too), the next send notices by itself."""
    outcome: asyncio.Future = asyncio.get_running_loop().create_future()
    give_up = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        stream = await open_stream(request)
        await stream.send(b"data: first\n\n")
        try:
            while not give_up.is_set():  # keeps sending until a send notices (or the test gives up)
                await asyncio.sleep(0.005)  # paces the sends only
                await stream.send(b"data: more\n\n")
            outcome.set_result("never noticed")
        except ConnectionResetError:
            outcome.set_result("reset")
        return stream.response

    app = web.Application()
    app.router.add_get("/s", handler)
    runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(f"http://127.0.0.1:{port}/s")
            assert (await resp.content.readline()) == b"data: first\n"
            resp.close()  # the client goes away mid-stream
        assert await asyncio.wait_for(outcome, 30) == "reset"  # a hang guard: noticed at all
    finally:
        give_up.set()
        await runner.cleanup()
