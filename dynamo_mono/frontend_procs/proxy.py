"""Forwards an HTTP request unchanged to the core's own HTTP server (Unix socket) and streams its answer back:
every route an HTTP process does not serve itself (health, metrics, models, embeddings, media, responses, LoRA,
plugin routes) is answered by the core, the same whichever process accepted the connection."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from dynamo_mono.http.middleware import error_response, flavor_of
from dynamo_mono.protocol.errors import ApiError

# Per-connection headers (RFC 9110 7.6.1) and the length the second hop sets itself. Host goes through: the core
# builds URLs from it (stored media).
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "transfer-encoding", "upgrade", "content-length"})


FORWARDED_PROTO = "x-forwarded-proto"


@web.middleware
async def forwarded_scheme(request: web.Request, handler: Any) -> web.StreamResponse:
    """In the core: a request an HTTP process forwarded (over the Unix socket, so from no one else) keeps the scheme
    the client used (https behind TLS)."""
    proto = request.headers.get(FORWARDED_PROTO)
    if proto in ("http", "https") and isinstance(request.transport.get_extra_info("sockname") if request.transport
                                                 else None, str):
        request = request.clone(scheme=proto)
    return await handler(request)


class CoreProxy:
    """The aiohttp handler that forwards to the core at a Unix socket path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.path, limit=0),
                                                 auto_decompress=False,
                                                 timeout=aiohttp.ClientTimeout(total=None))
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP and k.lower() != FORWARDED_PROTO]
        headers.append((FORWARDED_PROTO, request.scheme))  # the core builds URLs (stored media) with the client's
        try:
            upstream = await self.session.request(request.method, "http://core" + request.path_qs, headers=headers,
                                                  data=body or None, allow_redirects=False)
        except aiohttp.ClientError:
            return error_response(ApiError(503, "the server core is not reachable"), flavor_of(request.path))
        async with upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP:
                    resp.headers.add(k, v)
            if upstream.content_length is not None:
                resp.content_length = upstream.content_length
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
