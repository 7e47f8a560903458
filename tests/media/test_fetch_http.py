"""The media fetcher over real HTTP. Every target is on loopback (a test server on 127.0.0.1), so nothing can leave
the machine even if the guard were broken; refused URLs must not reach the server at all."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from dynamo_mono.media import fetch as fetch_mod
from dynamo_mono.media.fetch import FetchedMedia, FetchPolicy, FetchRefused, MediaFetcher

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
HANG_GUARD = 30.0  # only so a broken test cannot hang; never reached when the code works


@dataclass
class MediaServer:
    """A loopback media server that records every request it receives."""

    port: int
    hits: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # set only at teardown (slow / blocking routes)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
async def media(aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MediaServer]:
    async def no_dns(host: str, port: int) -> list[Any]:
        raise AssertionError(f"real DNS asked for {host}")

    monkeypatch.setattr(fetch_mod, "resolve_host", no_dns)
    state: dict[str, MediaServer] = {}

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        state["s"].hits.append(request.path)
        state["s"].hosts.append(request.headers.get("Host", ""))
        return await handler(request)

    async def img(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return await img(request)
        raise web.HTTPTemporaryRedirect(f"/chain/{n - 1}")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["n"]), content_type="image/png")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(int(request.query["chunks"])):
            await resp.write(b"y" * 16384)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))})
        await resp.prepare(request)
        await resp.write(PNG[:10])
        state["s"].entered.set()
        await state["s"].release.wait()
        await resp.write(PNG[10:])
        return resp

    async def blocking(request: web.Request) -> web.Response:
        state["s"].entered.set()
        await state["s"].release.wait()
        return await img(request)

    async def gzip(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b", headers={"Content-Encoding": "gzip", "Content-Type": "image/png"})

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="secret internal page body")

    app = web.Application(middlewares=[record])
    app.add_routes([web.get("/img.png", img), web.get("/redirect", redirect), web.get("/chain/{n}", chain),
                    web.get("/big", big), web.get("/chunked", chunked), web.get("/slow", slow),
                    web.get("/block", blocking), web.get("/gzip", gzip), web.get("/missing", missing)])
    server = await aiohttp_server(app, host="127.0.0.1")
    state["s"] = MediaServer(server.port)
    yield state["s"]
    state["s"].release.set()


def fetcher(**policy: Any) -> MediaFetcher:
    return MediaFetcher(FetchPolicy(**policy))


INTERNAL = {"allow_internal_media": True}


async def test_loopback_is_refused_by_default_and_allowed_with_allow_internal(media: MediaServer) -> None:
    with pytest.raises(FetchRefused, match="http:// media URLs are not allowed"):
        await fetcher().fetch(media.url("/img.png"))
    with pytest.raises(FetchRefused, match="'127.0.0.1' is a loopback address"):
        await fetcher().fetch(media.url("/img.png", scheme="https"))
    assert media.hits == []
    got = await fetcher(**INTERNAL).fetch(media.url("/img.png"))
    assert got == FetchedMedia(PNG, "image/png", "http")
    assert media.hits == ["/img.png"]


@pytest.mark.parametrize("host", ["[::1]", "0.0.0.0", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001",
                                  "127.1", "127.0.0.1.", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::127.0.0.1]",
                                  "localhost", "localhost.", "LOCALHOST", "[0:0:0:0:0:0:0:1]"])
async def test_loopback_spellings_are_refused_by_default(media: MediaServer, host: str) -> None:
    with pytest.raises(FetchRefused, match="address; this server only fetches media from public addresses"):
        await fetcher().fetch(media.url("/img.png", host=host, scheme="https"))
    assert media.hits == []


@pytest.mark.parametrize("host", ["0.0.0.0", "0", "[::]", "[::ffff:0.0.0.0]"])
async def test_unspecified_address_is_refused_even_with_allow_internal(media: MediaServer, host: str) -> None:
    with pytest.raises(FetchRefused, match="unspecified"):
        await fetcher(**INTERNAL).fetch(media.url("/img.png", host=host))
    assert media.hits == []


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "127.1", "127.0.0.1.", "localhost.",
                                  "LocalHost"])
async def test_numeric_and_local_spellings_reach_the_checked_address(media: MediaServer, host: str) -> None:
    got = await fetcher(**INTERNAL).fetch(media.url("/img.png", host=host))
    assert got.data == PNG and media.hits == ["/img.png"]


async def test_the_connection_goes_to_the_checked_address_and_keeps_the_name(media: MediaServer) -> None:
    """A name that only the patched resolver knows: the fetch can only succeed through the pinned addresses, and
    DNS is asked once even though a second answer would differ (no rebinding)."""
    answers = iter([["127.0.0.1"], ["10.0.0.1"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> list[Any]:
        calls.append(host)
        return [ipaddress.ip_address(a) for a in next(answers)]

    got = await MediaFetcher(FetchPolicy(**INTERNAL), resolve=rebinding).fetch(
        media.url("/img.png", host="media.test"))
    assert got.data == PNG
    assert calls == ["media.test"]
    assert media.hosts == [f"media.test:{media.port}"]


async def test_redirect_to_a_host_outside_the_allow_list_is_refused(media: MediaServer) -> None:
    policy = {**INTERNAL, "allowed_media_domains": frozenset({"127.0.0.1"})}
    ok = await fetcher(**policy).fetch(media.url("/redirect?to=" + media.url("/img.png")))
    assert ok.data == PNG and media.hits == ["/redirect", "/img.png"]
    media.hits.clear()
    for target in (media.url("/img.png", host="localhost"), media.url("/img.png", host="[::1]"),
                   media.url("/img.png", host="2130706433")):
        with pytest.raises(FetchRefused, match="redirected to a refused location: .* not in this server's allowed"):
            await fetcher(**policy).fetch(media.url("/redirect?to=" + target))
    assert media.hits == ["/redirect"] * 3


async def test_redirect_to_an_internal_address_is_refused(media: MediaServer) -> None:
    """The first hop is allowed (a name pinned to loopback, allowed by the allow-list and internal media); the
    redirect names 0.0.0.0, never allowed."""
    async def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    fetch = MediaFetcher(FetchPolicy(**INTERNAL), resolve=resolve)
    with pytest.raises(FetchRefused, match="redirected to a refused location: .*unspecified"):
        await fetch.fetch(media.url("/redirect?to=" + media.url("/img.png", host="0.0.0.0"), host="media.test"))
    assert media.hits == ["/redirect"]


@pytest.mark.parametrize("target,match", [
    ("file:///etc/passwd", "scheme 'file'"), ("gopher://127.0.0.1:70/_x", "scheme 'gopher'"),
    ("data:image/png;base64,iVBORw==", "scheme 'data'"), ("https://metadata.google.internal/", "cloud-metadata"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
])
async def test_redirect_to_other_schemes_and_metadata_is_refused(media: MediaServer, target: str,
                                                                 match: str) -> None:
    with pytest.raises(FetchRefused, match=match):
        await fetcher(**INTERNAL).fetch(media.url("/redirect?to=" + target))
    assert media.hits == ["/redirect"]


async def test_redirect_limit(media: MediaServer) -> None:
    assert (await fetcher(**INTERNAL).fetch(media.url("/chain/3"))).data == PNG
    media.hits.clear()
    with pytest.raises(FetchRefused, match="redirected more than 3 times"):
        await fetcher(**INTERNAL).fetch(media.url("/chain/4"))
    assert media.hits == ["/chain/4", "/chain/3", "/chain/2", "/chain/1"]
    with pytest.raises(FetchRefused, match="redirected more than 0 times"):
        await fetcher(**INTERNAL, max_media_redirects=0).fetch(media.url("/chain/1"))


async def test_oversize_body_with_content_length(media: MediaServer) -> None:
    policy = {**INTERNAL, "max_media_bytes": 1000}
    assert len((await fetcher(**policy).fetch(media.url("/big?n=1000"))).data) == 1000
    with pytest.raises(FetchRefused, match="larger than this server's limit of 1000 bytes"):
        await fetcher(**policy).fetch(media.url("/big?n=1001"))


async def test_oversize_chunked_body_without_length(media: MediaServer) -> None:
    policy = {**INTERNAL, "max_media_bytes": 100_000}
    assert len((await fetcher(**policy).fetch(media.url("/chunked?chunks=6"))).data) == 6 * 16384
    with pytest.raises(FetchRefused, match="larger than this server's limit of 100000 bytes"):
        await fetcher(**policy).fetch(media.url("/chunked?chunks=64"))


async def test_slow_body_past_the_time_cap(media: MediaServer) -> None:
    with pytest.raises(FetchRefused, match="took longer than 0.2 s"):
        await fetcher(**INTERNAL, media_fetch_timeout=0.2).fetch(media.url("/slow"))
    assert media.entered.is_set()


async def test_concurrent_fetches_are_bounded(media: MediaServer) -> None:
    fetch = fetcher(**INTERNAL, max_concurrent_media_fetches=1, media_fetch_timeout=HANG_GUARD)
    first = asyncio.create_task(fetch.fetch(media.url("/block")))
    await asyncio.wait_for(media.entered.wait(), HANG_GUARD)
    second = asyncio.create_task(fetch.fetch(media.url("/img.png")))
    async with asyncio.timeout(HANG_GUARD):
        while fetch.queued != 1:
            await asyncio.sleep(0.01)
    assert fetch.active == 1 and media.hits == ["/block"]
    media.release.set()
    assert (await first).data == PNG and (await second).data == PNG
    assert media.hits == ["/block", "/img.png"] and fetch.active == 0 and fetch.queued == 0


async def test_error_status_does_not_echo_the_body(media: MediaServer) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetcher(**INTERNAL).fetch(media.url("/missing"))
    assert str(info.value) == "the media host '127.0.0.1' answered HTTP 404"


async def test_compressed_body_is_refused(media: MediaServer) -> None:
    with pytest.raises(FetchRefused, match="sent a compressed body"):
        await fetcher(**INTERNAL).fetch(media.url("/gzip"))


async def test_closed_port_is_refused_without_echoing_the_address(media: MediaServer, unused_tcp_port: int) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetcher(**INTERNAL).fetch(f"http://localhost:{unused_tcp_port}/img.png")
    assert str(info.value) == "could not connect to media host 'localhost'"


async def test_file_and_gopher_are_refused(media: MediaServer) -> None:
    with pytest.raises(FetchRefused, match="file:// media URLs are not allowed"):
        await fetcher(**INTERNAL).fetch("file:///etc/passwd")
    with pytest.raises(FetchRefused, match="scheme 'gopher'"):
        await fetcher(**INTERNAL).fetch(f"gopher://127.0.0.1:{media.port}/_GET%20/img.png")
    assert media.hits == []
