"""Unit tests of the guarded media fetcher: address and host checks with the resolver and connector patched (no
connection is ever opened), data: URLs, file:// URLs, the policy options."""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dynamo_mono.config import ConfigError, defaults, resolve
from dynamo_mono.media import fetch as fetch_mod
from dynamo_mono.media.fetch import (
    FetchedMedia,
    FetchPolicy,
    FetchRefused,
    MediaFetcher,
    PinnedResolver,
    address_refusal,
    decode_data_url,
    numeric_host,
)
from dynamo_mono.media.fetch_options import MEDIA_FETCH_OPTIONS

ip = ipaddress.ip_address


class FakeResolver:
    """Answers from a table and records every question."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[Any]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [ip(a) for a in self.table[host]]


class RecordingConnector(aiohttp.BaseConnector):
    """Stands in for the TCP connector: asks the pinned resolver where it would connect, records it, and fails
    instead of connecting."""

    seen: list[list[str]] = []

    def __init__(self, resolver: PinnedResolver):
        super().__init__()
        self.resolver = resolver

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        answers = await self.resolver.resolve(req.url.raw_host, req.url.port or 443, socket.AF_UNSPEC)
        RecordingConnector.seen.append([a["host"] for a in answers])
        raise OSError("the test connector never connects")


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace the fetcher's connector with RecordingConnector; returns the address lists it was handed."""
    RecordingConnector.seen = []
    monkeypatch.setattr(MediaFetcher, "_connector", lambda self, resolver: RecordingConnector(resolver))
    return RecordingConnector.seen


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the real resolver."""

    async def refuse(host: str, port: int) -> list[Any]:
        raise AssertionError(f"real DNS asked for {host}")

    monkeypatch.setattr(fetch_mod, "resolve_host", refuse)


# --- address_refusal ---------------------------------------------------------------------------------------------

REFUSED_BY_DEFAULT = [
    ("169.254.169.254", "link-local"), ("169.254.170.2", "link-local"), ("100.100.100.200", "metadata"),
    ("fd00:ec2::254", "metadata"), ("10.0.0.1", "private"), ("10.255.255.255", "private"),
    ("172.16.0.1", "private"), ("172.31.255.1", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT"), ("100.127.255.254", "CGNAT"), ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"),
    ("0.0.0.0", "unspecified"), ("0.1.2.3", "unspecified"), ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"), ("255.255.255.255", "broadcast"), ("240.0.0.1", "reserved"),
    ("192.0.2.1", "documentation"), ("198.18.0.1", "benchmarking"),
    ("::1", "loopback"), ("::", "unspecified"), ("fd00::1", "unique-local"), ("fc00::1", "unique-local"),
    ("fe80::1", "link-local"), ("ff02::1", "multicast"), ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("::ffff:169.254.169.254", "link-local"),
    ("::127.0.0.1", "loopback"), ("::10.0.0.1", "private"),
    ("64:ff9b::a00:1", "private"), ("64:ff9b::7f00:1", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"),
    ("64:ff9b:1::1", "NAT64"), ("2002:a00:1::1", "private"), ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::", "link-local"), ("2001::1", "reserved"),
]


@pytest.mark.parametrize("addr,kind", REFUSED_BY_DEFAULT)
def test_non_public_addresses_are_refused(addr: str, kind: str) -> None:
    reason = address_refusal(ip(addr))
    assert reason is not None and kind in reason


@pytest.mark.parametrize("addr", ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111",
                                  "2a00:1450:4001::200e", "64:ff9b::808:808", "2002:808:808::1",
                                  "::ffff:8.8.8.8"])
def test_public_addresses_pass(addr: str) -> None:
    assert address_refusal(ip(addr)) is None


@pytest.mark.parametrize("addr", ["10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "127.0.0.1", "::1",
                                  "fd00::1", "::ffff:10.0.0.1", "64:ff9b::a00:1"])
def test_allow_internal_admits_private_and_loopback(addr: str) -> None:
    assert address_refusal(ip(addr), allow_internal=True) is None


@pytest.mark.parametrize("addr", ["169.254.169.254", "fe80::1", "fd00:ec2::254", "100.100.100.200", "0.0.0.0",
                                  "::", "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:169.254.169.254",
                                  "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::"])
def test_metadata_and_non_unicast_stay_refused_with_allow_internal(addr: str) -> None:
    assert address_refusal(ip(addr), allow_internal=True) is not None


@pytest.mark.parametrize("spelling", ["127.0.0.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001",
                                      "127.1", "017700000001", "127.0.1"])
def test_numeric_spellings_of_loopback(spelling: str) -> None:
    assert numeric_host(spelling) == ip("127.0.0.1")


@pytest.mark.parametrize("name", ["example.com", "face.bad", "localhost", "1.2.3.4.example", "a b", ""])
def test_names_are_not_numeric(name: str) -> None:
    assert numeric_host(name) is None


# --- the check through the fetcher, resolver and connector patched -------------------------------------------------

RESOLVES_INTERNAL = [
    ["169.254.169.254"], ["fd00::1"], ["10.1.2.3"], ["172.16.5.4"], ["192.168.0.10"], ["100.64.1.1"],
    ["224.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["10.0.0.1", "93.184.216.34"], ["2606:4700::1", "fd12::1"],
    ["::ffff:10.0.0.1"], ["64:ff9b::a00:1"], ["127.0.0.1"], ["0.0.0.0"],
]


@pytest.mark.parametrize("addrs", RESOLVES_INTERNAL)
async def test_a_name_resolving_to_any_internal_address_is_refused(addrs: list[str],
                                                                   no_connect: list[list[str]]) -> None:
    resolver = FakeResolver({"media.example": addrs})
    fetcher = MediaFetcher(FetchPolicy(), resolve=resolver)
    with pytest.raises(FetchRefused) as info:
        await fetcher.fetch("https://media.example/cat.png")
    msg = str(info.value)
    assert "'media.example' resolves to" in msg
    assert not any(a in msg for a in addrs), "the resolved address must not be echoed back"
    assert resolver.calls == [("media.example", 443)]
    assert no_connect == []


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://[fd00::1]/", "https://10.0.0.1/", "https://172.16.0.1/",
    "https://192.168.1.1/", "https://100.64.0.1/", "https://224.0.0.1/", "https://[::ffff:10.0.0.1]/",
    "https://[64:ff9b::a00:1]/", "https://[fe80::1%25eth0]/", "https://2852039166/", "https://0xa9.0xfe.0xa9.0xfe/",
    "https://169.254.169.254./",
])
async def test_internal_address_literals_are_refused_without_dns(url: str, no_connect: list[list[str]]) -> None:
    resolver = FakeResolver({})
    with pytest.raises(FetchRefused, match="address"):
        await MediaFetcher(FetchPolicy(), resolve=resolver).fetch(url)
    assert resolver.calls == [] and no_connect == []


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.google.internal.", "metadata",
                                  "metadata.goog", "instance-data", "instance-data.ec2.internal"])
@pytest.mark.parametrize("allow_internal", [False, True])
async def test_metadata_host_names_are_refused(host: str, allow_internal: bool,
                                               no_connect: list[list[str]]) -> None:
    resolver = FakeResolver({host.lower().rstrip("."): ["8.8.8.8"]})
    fetcher = MediaFetcher(FetchPolicy(allow_internal_media=allow_internal), resolve=resolver)
    with pytest.raises(FetchRefused, match="cloud-metadata"):
        await fetcher.fetch(f"https://{host}/computeMetadata/v1/")
    assert resolver.calls == [] and no_connect == []


@pytest.mark.parametrize("host", ["localhost", "localhost.", "LocalHost", "ip6-localhost", "x.localhost"])
async def test_local_names_are_refused_without_dns(host: str, no_connect: list[list[str]]) -> None:
    resolver = FakeResolver({})
    with pytest.raises(FetchRefused, match="loopback"):
        await MediaFetcher(FetchPolicy(), resolve=resolver).fetch(f"https://{host}/a.png")
    assert resolver.calls == [] and no_connect == []


async def test_a_public_name_connects_only_to_the_checked_addresses(no_connect: list[list[str]]) -> None:
    """The connector gets exactly the addresses the check saw; DNS is asked once (no second answer to differ)."""
    answers = iter([["93.184.216.34", "2606:2800:220:1::1"], ["10.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[Any]:
        return [ip(a) for a in next(answers)]

    with pytest.raises(FetchRefused, match="could not connect|connection to media host 'media.example' failed"):
        await MediaFetcher(FetchPolicy(), resolve=rebinding).fetch("https://media.example/cat.png")
    assert no_connect == [["93.184.216.34", "2606:2800:220:1::1"]]
    assert next(answers) == ["10.0.0.1"], "DNS must have been asked exactly once"


async def test_check_keeps_the_name_and_canonicalises_numeric_hosts() -> None:
    fetcher = MediaFetcher(FetchPolicy(allow_internal_media=True),
                           resolve=FakeResolver({"media.example": ["93.184.216.34"]}))
    named = await fetcher.check_http_url(fetch_mod.URL("https://media.example:8443/a.png"))
    assert str(named.url) == "https://media.example:8443/a.png"
    assert named.addresses == (ip("93.184.216.34"),)
    numeric = await fetcher.check_http_url(fetch_mod.URL("http://0x7f.1:9/a.png"))
    assert str(numeric.url) == "http://127.0.0.1:9/a.png" and numeric.addresses == (ip("127.0.0.1"),)


async def test_unresolvable_host_is_refused(no_connect: list[list[str]]) -> None:
    with pytest.raises(FetchRefused, match="could not be resolved"):
        await MediaFetcher(FetchPolicy(), resolve=FakeResolver({})).fetch("https://nowhere.example/x.png")
    assert no_connect == []


async def test_allowed_domains_refuse_other_hosts_before_dns(no_connect: list[list[str]]) -> None:
    resolver = FakeResolver({"evil.example": ["8.8.8.8"]})
    policy = FetchPolicy(allowed_media_domains=frozenset({"images.example"}))
    with pytest.raises(FetchRefused, match="'evil.example' is not in this server's allowed media domains"):
        await MediaFetcher(policy, resolve=resolver).fetch("https://evil.example/x.png")
    assert resolver.calls == [] and no_connect == []


async def test_allowed_domains_still_check_addresses(no_connect: list[list[str]]) -> None:
    policy = FetchPolicy(allowed_media_domains=frozenset({"images.example"}))
    fetcher = MediaFetcher(policy, resolve=FakeResolver({"images.example": ["10.0.0.7"]}))
    with pytest.raises(FetchRefused, match="private"):
        await fetcher.fetch("https://Images.Example./x.png")
    assert no_connect == []


async def test_pinned_resolver_answers_only_what_was_checked() -> None:
    r = PinnedResolver()
    r.pin("Media.Example.", (ip("93.184.216.34"), ip("2606:2800:220:1::1")))
    both = await r.resolve("media.example", 443, socket.AF_UNSPEC)
    assert [(a["hostname"], a["host"], a["port"]) for a in both] == [
        ("media.example", "93.184.216.34", 443), ("media.example", "2606:2800:220:1::1", 443)]
    assert [a["host"] for a in await r.resolve("media.example.", 443, socket.AF_INET6)] == ["2606:2800:220:1::1"]
    with pytest.raises(OSError):
        await r.resolve("other.example", 443, socket.AF_UNSPEC)


# --- schemes and URL shapes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,match", [
    ("gopher://127.0.0.1:70/_x", "scheme 'gopher'"), ("ftp://example.com/a.png", "scheme 'ftp'"),
    ("javascript:alert(1)", "scheme 'javascript'"), ("dict://127.0.0.1:11211/", "scheme 'dict'"),
    ("//example.com/a.png", "without a scheme"), ("example.com/a.png", "without a scheme"),
    ("http://example.com/a.png", "http:// media URLs are not allowed"),
    ("https://user:pw@example.com/a.png", "credentials"),
    ("https://example.com@10.0.0.1/a.png", "credentials"),
    ("file:///etc/passwd", "file:// media URLs are not allowed"),
    ("https://example.com:99999/", "not a valid URL"),
])
async def test_refused_urls(url: str, match: str, no_connect: list[list[str]]) -> None:
    with pytest.raises(FetchRefused, match=match):
        await MediaFetcher(FetchPolicy(), resolve=FakeResolver({})).fetch(url)
    assert no_connect == []


async def test_scheme_refusal_lists_what_is_allowed(tmp_path: Path) -> None:
    policy = FetchPolicy(allow_internal_media=True, allowed_local_media_path=tmp_path.resolve())
    with pytest.raises(FetchRefused, match="use https://, http://, data:, file://"):
        await MediaFetcher(policy).fetch("gopher://x/")


# --- data: URLs ----------------------------------------------------------------------------------------------------

def test_data_url_base64() -> None:
    raw = bytes(range(256)) * 3
    got = decode_data_url("data:image/PNG;base64," + base64.b64encode(raw).decode(), 10_000)
    assert got == FetchedMedia(raw, "image/png", "data")


def test_data_url_base64_percent_encoded_and_wrapped() -> None:
    raw = b"\xfb\xff\xfe" * 50
    b64 = base64.b64encode(raw).decode()
    wrapped = "\n".join(b64[i:i + 20] for i in range(0, len(b64), 20))
    encoded = wrapped.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    assert decode_data_url(f"data:image/jpeg;name=x;base64,{encoded}", 10_000).data == raw


def test_data_url_percent_encoded() -> None:
    got = decode_data_url("data:text/plain;charset=utf-8,caf%C3%A9%00", 100)
    assert got == FetchedMedia("café\0".encode(), "text/plain", "data")
    assert decode_data_url("data:,x", 100).content_type is None


def test_data_url_size_cap_is_on_decoded_bytes() -> None:
    exact = base64.b64encode(b"a" * 100).decode()  # 136 characters encode 100 bytes
    assert len(decode_data_url("data:image/png;base64," + exact, 100).data) == 100
    with pytest.raises(FetchRefused, match="larger than this server's limit of 99 bytes"):
        decode_data_url("data:image/png;base64," + exact, 99)
    with pytest.raises(FetchRefused, match="limit of 3 bytes"):
        decode_data_url("data:,%41%41%41%41", 3)
    assert decode_data_url("data:,%41%41%41", 3).data == b"AAA"


@pytest.mark.parametrize("url,match", [
    ("data:image/png;base64,@@@@", "not valid base64"), ("data:image/png;base64,abc", "not valid base64"),
    ("data:image/png;base64", "no ','"),
])
def test_bad_data_urls(url: str, match: str) -> None:
    with pytest.raises(FetchRefused, match=match):
        decode_data_url(url, 1000)


async def test_data_url_through_fetch_is_case_insensitive() -> None:
    got = await MediaFetcher(FetchPolicy()).fetch("  DATA:image/gif;base64,R0lGOA==  ")
    assert got == FetchedMedia(b"GIF8", "image/gif", "data")


# --- file:// URLs --------------------------------------------------------------------------------------------------

@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "cat.png").write_bytes(b"\x89PNG fake")
    (root / "sub" / "dog.jpg").write_bytes(b"jpeg")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "escape.png").symlink_to(tmp_path / "secret.txt")
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "inner.png").symlink_to(root / "cat.png")
    return root


def _files(root: Path, **kw: Any) -> MediaFetcher:
    return MediaFetcher(FetchPolicy(allowed_local_media_path=root.resolve(), **kw))


async def test_file_under_the_allowed_dir(media_dir: Path) -> None:
    got = await _files(media_dir).fetch(f"file://{media_dir}/cat.png")
    assert got == FetchedMedia(b"\x89PNG fake", "image/png", "file")
    assert (await _files(media_dir).fetch(f"file://localhost{media_dir}/sub/dog.jpg")).data == b"jpeg"
    assert (await _files(media_dir).fetch(f"file://{media_dir}/inner.png")).data == b"\x89PNG fake"
    spaced = media_dir / "a b.png"
    spaced.write_bytes(b"x")
    assert (await _files(media_dir).fetch(f"file://{media_dir}/a%20b.png")).data == b"x"


@pytest.mark.parametrize("tail,match", [
    ("/escape.png", "not inside"), ("/escape_dir/secret.txt", "not inside"), ("/../secret.txt", r"'\.\.'"),
    ("/sub/../cat.png", r"'\.\.'"), ("/%2E%2E/secret.txt", r"'\.\.'"), ("/missing.png", "does not exist"),
    ("/sub", "not a regular file"),
])
async def test_file_escapes_and_misses_are_refused(media_dir: Path, tail: str, match: str) -> None:
    with pytest.raises(FetchRefused, match=match):
        await _files(media_dir).fetch(f"file://{media_dir}{tail}")


async def test_files_outside_the_dir_are_refused(media_dir: Path) -> None:
    for url in ("file:///etc/passwd", "file:///nonexistent/x.png", f"file://{media_dir.parent}/secret.txt"):
        with pytest.raises(FetchRefused, match="not inside this server's allowed local media directory"):
            await _files(media_dir).fetch(url)
    with pytest.raises(FetchRefused, match="must not name a host"):
        await _files(media_dir).fetch(f"file://otherhost{media_dir}/cat.png")


async def test_file_size_cap(media_dir: Path) -> None:
    with pytest.raises(FetchRefused, match="limit of 4 bytes"):
        await _files(media_dir, max_media_bytes=4).fetch(f"file://{media_dir}/cat.png")


async def test_fifo_is_not_read(media_dir: Path) -> None:
    os.mkfifo(media_dir / "pipe.png")
    with pytest.raises(FetchRefused, match="not a regular file"):
        await _files(media_dir).fetch(f"file://{media_dir}/pipe.png")


# --- options -> policy ---------------------------------------------------------------------------------------------

def test_defaults() -> None:
    policy = FetchPolicy.from_settings(defaults(MEDIA_FETCH_OPTIONS))
    assert policy == FetchPolicy()
    assert policy.max_media_bytes == 20 * 1024 * 1024 and policy.media_fetch_timeout == 20.0
    assert policy.max_concurrent_media_fetches == 16 and policy.max_media_redirects == 3
    assert not policy.allow_internal_media and policy.allowed_local_media_path is None


def test_dynamo_env_names(tmp_path: Path) -> None:
    env = {"DYN_MM_ALLOW_INTERNAL": "1", "DYN_MM_LOCAL_PATH": str(tmp_path),
           "DYN_ALLOWED_MEDIA_DOMAINS": "Images.Example., cdn.example , 127.0.0.1,[::1]",
           "DYN_MAX_MEDIA_BYTES": "1024", "DYN_MEDIA_FETCH_TIMEOUT": "2.5",
           "DYN_MAX_CONCURRENT_MEDIA_FETCHES": "2", "DYN_MAX_MEDIA_REDIRECTS": "0"}
    policy = FetchPolicy.from_settings(resolve(MEDIA_FETCH_OPTIONS, {}, env=env))
    assert policy == FetchPolicy(
        allow_internal_media=True, allowed_local_media_path=tmp_path.resolve(),
        allowed_media_domains=frozenset({"images.example", "cdn.example", "127.0.0.1", "::1"}),
        max_media_bytes=1024, media_fetch_timeout=2.5, max_concurrent_media_fetches=2, max_media_redirects=0)


def test_flags() -> None:
    assert {o.flag for o in MEDIA_FETCH_OPTIONS} == {
        "--allow-internal-media", "--allowed-local-media-path", "--allowed-media-domains", "--max-media-bytes",
        "--media-fetch-timeout", "--max-concurrent-media-fetches", "--max-media-redirects"}


@pytest.mark.parametrize("env,match", [
    ({"DYN_MM_LOCAL_PATH": "/nonexistent/dir"}, "no such directory"),
    ({"DYN_MM_LOCAL_PATH": "/etc/hostname"}, "not a directory"),
    ({"DYN_ALLOWED_MEDIA_DOMAINS": "https://images.example"}, "expected a host name"),
    ({"DYN_ALLOWED_MEDIA_DOMAINS": "images.example:443"}, "expected a host name"),
    ({"DYN_MEDIA_FETCH_TIMEOUT": "0"}, "DYN_MEDIA_FETCH_TIMEOUT"),
    ({"DYN_MM_ALLOW_INTERNAL": "maybe"}, "DYN_MM_ALLOW_INTERNAL"),
])
def test_bad_options(env: dict[str, str], match: str) -> None:
    if env.get("DYN_MM_LOCAL_PATH") == "/etc/hostname" and not Path("/etc/hostname").is_file():
        pytest.skip("no /etc/hostname here")
    with pytest.raises(ConfigError, match=match):
        FetchPolicy.from_settings(resolve(MEDIA_FETCH_OPTIONS, {}, env=env))
