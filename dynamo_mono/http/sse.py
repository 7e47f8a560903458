"""Server-sent events: prepare a stream response and write pre-serialized events in one write per step."""

from __future__ import annotations

import orjson
from aiohttp import web

DONE = b"data: [DONE]\n\n"


async def open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "Connection": "keep-alive",
        "x-request-id": request.get("request_id", ""),
    })
    await resp.prepare(request)
    return resp


def data_event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def named_event(name: str, obj: object) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
