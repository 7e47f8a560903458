"""The media fetcher's SSRF guard end to end: chat requests naming media URLs, against a real server subprocess.

Every target is on loopback (a recording media host on 127.0.0.1, spelled every way a client could), so nothing can
leave the machine even if the guard were broken. Each refusal is a 400 naming the content part with a reason, the
refused host is never connected to, and the server keeps serving afterwards. Non-loopback ranges (metadata
addresses, RFC 1918, CGNAT, ULA, multicast, names resolving to several addresses) are covered by the unit tests of
the address check (tests/media/test_fetch.py), which never open a connection.
"""

from __future__ import annotations

import base64
import io
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from conformance.media_host import MediaHost, png_header_bomb
from conformance.server import ServerProcess, start_server
from tests.worker.harness import post_json

pytestmark = pytest.mark.timeout(120)

MEDIA = ["--engine", "mocker", "--speedup-ratio", "0", "--mocker-input-modalities", "text,image",
         "--block-size", "16"]
MAX_BYTES = 100_000


def _png(size: int = 56, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _chat(url: str) -> dict:
    return {"model": "tiny-chatml", "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


@pytest.fixture(scope="module")
def host() -> Iterator[MediaHost]:
    h = MediaHost({"/img.png": _png(), "/corrupt.png": _png()[:-64], "/bomb.png": png_header_bomb()},
                  big_bytes=MAX_BYTES + 1)
    yield h
    h.close()


@pytest.fixture(scope="module")
def trap() -> Iterator[MediaHost]:
    """A second loopback host that no request may ever reach."""
    h = MediaHost({"/img.png": _png()})
    yield h
    h.close()


@pytest.fixture(scope="module")
def default_server(engine_args: list[str]) -> Iterator[ServerProcess]:
    if "mocker" not in engine_args:
        pytest.skip("media input conformance runs on the mocker (--mocker-input-modalities)")
    srv = start_server(MEDIA)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def internal_server(engine_args: list[str]) -> Iterator[ServerProcess]:
    if "mocker" not in engine_args:
        pytest.skip("media input conformance runs on the mocker (--mocker-input-modalities)")
    srv = start_server([*MEDIA, "--allow-internal-media", "--allowed-media-domains", "127.0.0.1",
                        "--max-media-bytes", str(MAX_BYTES), "--media-fetch-timeout", "2"])
    yield srv
    srv.stop()


def _refused(server: ServerProcess, url: str, needle: str) -> None:
    status, body = post_json(server.url + "/v1/chat/completions", _chat(url))
    assert status == 400, (url, body)
    err = body["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "messages[0].content[1].image_url", err
    assert err["message"].startswith("messages[0].content[1].image_url: ") and needle in err["message"], (url, err)
    assert "Traceback" not in err["message"]


# (host spelling, what the refusal says): the default server refuses loopback whatever the spelling.
LOOPBACK_SPELLINGS = [
    ("127.0.0.1", "is a loopback address"),
    ("[::1]", "is a loopback address"),
    ("0.0.0.0", "is an unspecified address"),
    ("2130706433", "is a loopback address"),  # decimal
    ("0177.0.0.1", "is a loopback address"),  # octal
    ("0x7f.0.0.1", "is a loopback address"),  # hex
    ("0x7f000001", "is a loopback address"),
    ("127.1", "is a loopback address"),
    ("[::ffff:127.0.0.1]", "is a loopback address"),
    ("localhost.", "resolves to a loopback address"),
    ("LOCALHOST", "resolves to a loopback address"),
]


@pytest.mark.parametrize("spelling, needle", LOOPBACK_SPELLINGS, ids=[s for s, _ in LOOPBACK_SPELLINGS])
def test_default_server_refuses_loopback_in_every_spelling(default_server: ServerProcess, trap: MediaHost,
                                                           spelling: str, needle: str) -> None:
    _refused(default_server, trap.url("/img.png", spelling, "https"), needle)
    assert trap.connections == 0 and trap.hits == []


def test_default_server_refuses_http_file_and_other_schemes(default_server: ServerProcess, host: MediaHost) -> None:
    before = len(host.hits)
    _refused(default_server, host.url("/img.png"), "http:// media URLs are not allowed on this server")
    _refused(default_server, "file:///etc/passwd", "file:// media URLs are not allowed on this server")
    _refused(default_server, f"gopher://127.0.0.1:{host.port}/img.png", "URL scheme 'gopher' is not supported")
    _refused(default_server, f"ftp://127.0.0.1:{host.port}/img.png", "URL scheme 'ftp' is not supported")
    _refused(default_server, f"https://user:pw@example.com:{host.port}/x", "with credentials")
    _refused(default_server, "https://metadata.google.internal/computeMetadata/v1/", "cloud-metadata service")
    assert len(host.hits) == before


def test_internal_server_fetches_the_loopback_host(internal_server: ServerProcess, host: MediaHost) -> None:
    status, body = post_json(internal_server.url + "/v1/chat/completions", _chat(host.url("/img.png")))
    assert status == 200, body
    assert host.hits.count("/img.png") >= 1


# (path or URL on the loopback host, what the refusal says), all against the server that allows internal media.
INTERNAL_TABLE = [
    ("/redirect?to=http://localhost:{trap}/img.png", "redirected to a refused location: the media host 'localhost' "
                                                     "is not in this server's allowed media domains"),
    ("/redirect?to=http://[::1]:{trap}/img.png", "redirected to a refused location"),
    ("/redirect?to=file:///etc/passwd", "redirected to a refused location"),
    ("/big", f"the media is larger than this server's limit of {MAX_BYTES} bytes"),
    ("/slow", "fetching the media URL took longer than 2 s"),
    ("/bomb.png", "image refused: 10000x10000 is 100000000 pixels, over the limit"),
    ("/corrupt.png", "corrupt image data"),
    ("/missing.png", "answered HTTP 404"),
]


@pytest.mark.parametrize("path, needle", INTERNAL_TABLE, ids=[p.split("?")[0] + p[-12:] for p, _ in INTERNAL_TABLE])
def test_internal_server_refusals(internal_server: ServerProcess, host: MediaHost, trap: MediaHost, path: str,
                                  needle: str) -> None:
    _refused(internal_server, host.url(path.format(trap=trap.port)), needle)
    assert trap.connections == 0


def test_the_server_keeps_serving(default_server: ServerProcess, internal_server: ServerProcess) -> None:
    """Run after the tables (file order): both servers still answer chat requests with images."""
    url = "data:image/png;base64," + base64.b64encode(_png(84, seed=5)).decode()
    for srv in (default_server, internal_server):
        status, body = post_json(srv.url + "/v1/chat/completions", _chat(url))
        assert status == 200, body
        assert body["usage"]["prompt_tokens"] > 9  # 3 x 3 image tokens at least
        assert post_json(srv.url + "/v1/chat/completions", {"model": "tiny-chatml", "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "hi"}]})[0] == 200
