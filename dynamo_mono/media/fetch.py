"""The one guarded fetcher for client-named URLs (data:, https:, http:, file:), hardened against SSRF.

Every http(s) hop is checked before anything is sent: scheme, credentials, the domain allow-list, the host name,
and every address the host resolves to. The connection then goes to those checked addresses only (a resolver
that answers from the check's result, so a second DNS answer cannot differ: no rebinding), while TLS SNI and the
Host header keep the name. Redirects are followed by hand, each hop checked like the first. Size, total time and
concurrency are capped. Refusals are `FetchRefused` with a message a client can act on; it never carries the
fetched body or an address the server resolved.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import mimetypes
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Literal, NoReturn
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from dynamo_mono.config import ConfigError, Settings
from dynamo_mono.media.fetch_options import (
    DEFAULT_MAX_CONCURRENT_MEDIA_FETCHES,
    DEFAULT_MAX_MEDIA_BYTES,
    DEFAULT_MAX_MEDIA_REDIRECTS,
    DEFAULT_MEDIA_FETCH_TIMEOUT,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Source = Literal["data", "https", "http", "file"]
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

_CHUNK = 64 * 1024
_INLINE_DATA_URL = 64 * 1024  # data: URLs longer than this are decoded on a worker thread
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "dynamo-mono media fetcher"


class FetchRefused(ValueError):
    """A media URL this server will not fetch, or a fetch that failed; the message says why (client-safe)."""


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    data: bytes
    content_type: str | None  # "type/subtype", lowercased, parameters dropped; None when not stated
    source: Source


@dataclass(frozen=True)
class FetchPolicy:
    """What the fetcher may do; field names are the option names (see fetch_options.py)."""

    allow_internal_media: bool = False
    allowed_local_media_path: Path | None = None  # resolved directory; None = file:// refused
    allowed_media_domains: frozenset[str] = frozenset()  # normalised host names; empty = any public host
    max_media_bytes: int = DEFAULT_MAX_MEDIA_BYTES
    media_fetch_timeout: float = DEFAULT_MEDIA_FETCH_TIMEOUT
    max_concurrent_media_fetches: int = DEFAULT_MAX_CONCURRENT_MEDIA_FETCHES
    max_media_redirects: int = DEFAULT_MAX_MEDIA_REDIRECTS

    @classmethod
    def from_settings(cls, settings: Settings) -> "FetchPolicy":
        """Build from resolved options (MEDIA_FETCH_OPTIONS); ConfigError on a bad directory or domain list."""
        return cls(
            allow_internal_media=bool(settings.allow_internal_media),
            allowed_local_media_path=local_media_root(settings.allowed_local_media_path),
            allowed_media_domains=parse_media_domains(settings.allowed_media_domains),
            max_media_bytes=settings.max_media_bytes,
            media_fetch_timeout=settings.media_fetch_timeout,
            max_concurrent_media_fetches=settings.max_concurrent_media_fetches,
            max_media_redirects=settings.max_media_redirects,
        )


def local_media_root(raw: str | None) -> Path | None:
    """The resolved --allowed-local-media-path directory (ConfigError if it is not an existing directory)."""
    if raw is None or not raw.strip():
        return None
    root = Path(raw).expanduser()
    try:
        root = root.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConfigError(f"invalid --allowed-local-media-path={raw!r}: no such directory") from None
    if not root.is_dir():
        raise ConfigError(f"invalid --allowed-local-media-path={raw!r}: not a directory")
    return root


def parse_media_domains(raw: str | None) -> frozenset[str]:
    """Normalise a comma-separated host allow-list (lowercase, IDNA, no trailing dot); ConfigError on URLs."""
    if not raw:
        return frozenset()
    hosts: set[str] = set()
    for entry in raw.split(","):
        entry = entry.strip().removeprefix("[").removesuffix("]")
        if not entry:
            continue
        if "/" in entry or "@" in entry or (":" in entry and not _is_ip_literal(entry)):
            raise ConfigError(f"invalid --allowed-media-domains entry {entry!r}: expected a host name such as "
                              "images.example.com (no scheme, port or path)")
        try:
            host = URL.build(scheme="https", host=entry).raw_host or ""
        except ValueError:
            raise ConfigError(f"invalid --allowed-media-domains entry {entry!r}: not a host name") from None
        hosts.add(_host_key(host))
    return frozenset(hosts)


# --- address and host-name checks ------------------------------------------------------------------------------

def _nets(*specs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in specs)


# Never fetched from, even with allow_internal_media: not unicast destinations, or cloud-metadata services.
_NEVER = _nets(
    ("0.0.0.0/8", "unspecified"), ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("100.100.100.200/32", "cloud metadata"), ("192.0.0.192/32", "cloud metadata"),
    ("224.0.0.0/4", "multicast"), ("255.255.255.255/32", "broadcast"),
    ("::/128", "unspecified"), ("fe80::/10", "link-local"), ("fd00:ec2::254/128", "cloud metadata"),
    ("ff00::/8", "multicast"),
)
# Fetched from only with allow_internal_media.
_INTERNAL = _nets(
    ("10.0.0.0/8", "private"), ("172.16.0.0/12", "private"), ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"), ("127.0.0.0/8", "loopback"), ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"), ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"),
    ("198.18.0.0/15", "benchmarking"), ("192.88.99.0/24", "reserved"), ("240.0.0.0/4", "reserved"),
    ("::1/128", "loopback"), ("fc00::/7", "unique-local (private)"), ("fec0::/10", "site-local (private)"),
    ("100::/64", "reserved"), ("2001::/23", "reserved"), ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"), ("64:ff9b:1::/48", "private NAT64"),
)
_V4_COMPAT = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Host names of cloud-metadata services: refused always. Compared without trailing dot, lowercased.
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.internal", "instance-data",
    "instance-data.ec2.internal", "metadata.tencentyun.com", "metadata.packet.net", "metadata.platformequinix.com",
})
# Names that mean this machine: refused unless allow_internal_media, and never sent to DNS.
_LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


def address_refusal(ip: IPAddress, allow_internal: bool = False) -> str | None:
    """Why a connection to `ip` is refused (a kind such as "loopback"), or None if it may be fetched from.

    IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64
    64:ff9b::/96, 6to4 2002::/16) are judged by the IPv4 address they carry.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(int(ip))
        if ip == _LOOPBACK[1]:
            return None if allow_internal else "loopback"
    for net, kind in _NEVER:
        if ip.version == net.version and ip in net:
            return kind
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and (ip in _V4_COMPAT or ip in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refusal(embedded, allow_internal)
    if allow_internal:
        return None
    for net, kind in _INTERNAL:
        if ip.version == net.version and ip in net:
            return kind
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "non-public"
    return None


def _host_key(host: str) -> str:
    return host.rstrip(".").lower()


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


def numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host spelling means, or None for a name.

    Covers what the C library accepts without DNS, not only dotted quads: 2130706433, 0177.0.0.1, 0x7f.0.0.1,
    127.1, and IPv6 literals with an optional zone.
    """
    bare = host.split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if not bare or any(c not in "0123456789abcdefxABCDEFX." for c in bare):
        return None
    try:
        infos = socket.getaddrinfo(bare, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return ipaddress.ip_address(infos[0][4][0])


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (TCP), through the event loop's getaddrinfo; OSError when none."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addrs: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in addrs:
                addrs.append(ip)
    if not addrs:
        raise OSError(f"no addresses for {host}")
    return addrs


@dataclass(frozen=True)
class CheckedTarget:
    """One http(s) hop that passed every check: the URL to request and the only addresses to connect to."""

    url: URL  # a numeric host is rewritten to its canonical address; names are kept (SNI, Host header)
    addresses: tuple[IPAddress, ...]


class PinnedResolver(AbstractResolver):
    """aiohttp resolver answering only from checked results: the connection goes where the check looked."""

    def __init__(self) -> None:
        self._pins: dict[str, tuple[IPAddress, ...]] = {}

    def pin(self, host: str, addresses: tuple[IPAddress, ...]) -> None:
        self._pins[_host_key(host)] = addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addrs = self._pins.get(_host_key(host), ())
        out: list[ResolveResult] = []
        for ip in addrs:
            fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, fam):
                out.append(ResolveResult(hostname=host, host=str(ip), port=port, family=fam, proto=0,
                                         flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV))
        if not out:
            raise OSError(f"{host} was not checked")  # never reached by the fetcher: every hop is pinned first
        return out

    async def close(self) -> None:
        return None


# --- the fetcher ------------------------------------------------------------------------------------------------

class MediaFetcher:
    """Fetches client-named media under a FetchPolicy; one instance per server (it bounds concurrency).

    `resolve` replaces the DNS lookup (tests); by default `resolve_host`, looked up at call time.
    `active` / `queued` count fetches holding a slot and fetches waiting for one.
    """

    def __init__(self, policy: FetchPolicy, *, resolve: Resolve | None = None) -> None:
        self.policy = policy
        self.resolve = resolve
        self.active = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(policy.max_concurrent_media_fetches)

    async def fetch(self, url: str) -> FetchedMedia:
        """The media `url` names, or FetchRefused saying why not."""
        limit = self.policy.media_fetch_timeout
        try:
            async with asyncio.timeout(limit):
                self.queued += 1
                try:
                    await self._slots.acquire()
                finally:
                    self.queued -= 1
                self.active += 1
                try:
                    return await self._fetch(url.strip())
                finally:
                    self.active -= 1
                    self._slots.release()
        except TimeoutError:
            raise FetchRefused(f"fetching the media URL took longer than {limit:g} s") from None

    async def _fetch(self, url: str) -> FetchedMedia:
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            if len(url) > _INLINE_DATA_URL:  # base64 runs at ~200 MB/s: a large one would stall the event loop
                return await asyncio.to_thread(decode_data_url, url, self.policy.max_media_bytes)
            return decode_data_url(url, self.policy.max_media_bytes)
        if scheme == "file":
            return await self._fetch_file(url)
        if scheme in ("http", "https"):
            return await self._fetch_http(url)
        _refuse_scheme(scheme, self.policy)

    # --- file:// ---

    async def _fetch_file(self, url: str) -> FetchedMedia:
        root = self.policy.allowed_local_media_path
        if root is None:
            raise FetchRefused("file:// media URLs are not allowed on this server (the operator can allow a "
                               "directory with --allowed-local-media-path)")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchRefused("a file:// media URL must not name a host (use file:///path)")
        if parts.query or parts.fragment:
            raise FetchRefused("a file:// media URL must not have a query or fragment")
        raw_path = unquote(parts.path)
        if "\x00" in raw_path or not raw_path.startswith("/"):
            raise FetchRefused("a file:// media URL needs an absolute path (file:///dir/name.png)")
        if ".." in raw_path.split("/"):
            raise FetchRefused("a file:// media URL must not contain '..'")
        path = Path(raw_path).resolve(strict=False)
        if not path.is_relative_to(root):
            raise FetchRefused(f"the file {raw_path!r} is not inside this server's allowed local media directory")
        data = await asyncio.to_thread(_read_file, path, raw_path, self.policy.max_media_bytes)
        ctype, _ = mimetypes.guess_type(path.name)
        return FetchedMedia(data, ctype, "file")

    # --- http(s):// ---

    async def check_http_url(self, url: URL) -> CheckedTarget:
        """Check one http(s) hop without connecting: scheme, credentials, allow-list, host name, addresses."""
        policy = self.policy
        if url.scheme not in ("http", "https"):
            _refuse_scheme(url.scheme, policy)
        if url.scheme == "http" and not policy.allow_internal_media:
            raise FetchRefused("http:// media URLs are not allowed on this server; use https:// or a data: URL")
        if url.user is not None or url.password is not None:
            raise FetchRefused("media URLs with credentials (user@host) are not accepted")
        raw_host = url.raw_host
        if not raw_host:
            raise FetchRefused("the media URL has no host")
        shown = url.host or raw_host
        key = _host_key(raw_host)
        if not key:
            raise FetchRefused("the media URL has no host")
        if policy.allowed_media_domains and key not in policy.allowed_media_domains:
            raise FetchRefused(f"the media host {shown!r} is not in this server's allowed media domains")
        if key in METADATA_HOSTS:
            raise FetchRefused(f"the media host {shown!r} is a cloud-metadata service; it is never fetched from")
        port = url.port or (443 if url.scheme == "https" else 80)
        ip = numeric_host(key)
        if ip is not None:
            addrs: tuple[IPAddress, ...] = (ip,)
            canonical = str(ip) if ip.version == 4 else str(ipaddress.IPv6Address(int(ip)))
            if raw_host != canonical:
                url = url.with_host(canonical)
        elif key in _LOCAL_HOSTS or key.endswith(".localhost"):
            addrs = _LOOPBACK  # this machine by definition (RFC 6761); not asked of DNS
        else:
            resolve = self.resolve or resolve_host
            try:
                addrs = tuple(await resolve(key, port))
            except (OSError, UnicodeError, ValueError):
                raise FetchRefused(f"the media host {shown!r} could not be resolved") from None
            if not addrs:
                raise FetchRefused(f"the media host {shown!r} could not be resolved")
        for addr in addrs:
            kind = address_refusal(addr, policy.allow_internal_media)
            if kind is not None:
                verb = "is" if ip is not None else "resolves to"
                article = "an" if kind[0] in "aeiou" else "a"
                rule = ("never fetches media from such addresses" if policy.allow_internal_media
                        else "only fetches media from public addresses")
                raise FetchRefused(f"the media host {shown!r} {verb} {article} {kind} address; this server {rule}")
        return CheckedTarget(url, addrs)

    def _connector(self, resolver: PinnedResolver) -> aiohttp.BaseConnector:
        return aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)

    async def _fetch_http(self, raw: str) -> FetchedMedia:
        try:
            url = URL(raw)
        except (ValueError, TypeError):
            raise FetchRefused("the media URL is not a valid URL") from None
        resolver = PinnedResolver()
        session = aiohttp.ClientSession(
            connector=self._connector(resolver), cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
        async with session:
            for hop in range(self.policy.max_media_redirects + 1):
                try:
                    target = await self.check_http_url(url)
                except FetchRefused as exc:
                    if hop == 0:
                        raise
                    raise FetchRefused(f"the media URL redirected to a refused location: {exc}") from None
                resolver.pin(target.url.raw_host or "", target.addresses)
                nxt = await self._request(session, target.url, url.host or "")
                if isinstance(nxt, FetchedMedia):
                    return nxt
                url = nxt
        raise FetchRefused(f"the media URL redirected more than {self.policy.max_media_redirects} times")

    async def _request(self, session: aiohttp.ClientSession, url: URL, shown: str) -> FetchedMedia | URL:
        """One hop: the media, or the URL a redirect points to."""
        try:
            async with session.get(url, allow_redirects=False) as resp:
                if resp.status in _REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        raise FetchRefused(f"the media host {shown!r} answered a redirect without a Location")
                    try:
                        return url.join(URL(location))
                    except (ValueError, TypeError):
                        raise FetchRefused(f"the media host {shown!r} redirected to an invalid URL") from None
                if not 200 <= resp.status < 300:
                    raise FetchRefused(f"the media host {shown!r} answered HTTP {resp.status}")
                if resp.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
                    raise FetchRefused(f"the media host {shown!r} sent a compressed body (Content-Encoding); media "
                                       "must be served uncompressed")
                data = await self._read_body(resp)
                source: Source = "https" if url.scheme == "https" else "http"
                return FetchedMedia(data, _essence(resp.headers.get("Content-Type")), source)
        except aiohttp.ClientConnectorCertificateError:
            raise FetchRefused(f"the TLS certificate of media host {shown!r} could not be verified") from None
        except aiohttp.ClientSSLError:
            raise FetchRefused(f"the TLS handshake with media host {shown!r} failed") from None
        except aiohttp.ClientConnectorError:
            raise FetchRefused(f"could not connect to media host {shown!r}") from None
        except aiohttp.InvalidURL:
            raise FetchRefused("the media URL is not a valid URL") from None
        except aiohttp.ClientResponseError:
            raise FetchRefused(f"the media host {shown!r} sent an invalid HTTP response") from None
        except TimeoutError:
            raise
        except (aiohttp.ClientError, OSError):
            raise FetchRefused(f"the connection to media host {shown!r} failed before the media was complete") \
                from None

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        cap = self.policy.max_media_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise _too_big(cap)
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > cap:
                raise _too_big(cap)
        return bytes(buf)


def _refuse_scheme(scheme: str, policy: FetchPolicy) -> NoReturn:
    allowed = ["https://", "data:"]
    if policy.allow_internal_media:
        allowed.insert(1, "http://")
    if policy.allowed_local_media_path is not None:
        allowed.append("file://")
    what = f"URL scheme {scheme!r}" if scheme else "a URL without a scheme"
    raise FetchRefused(f"{what} is not supported for media; use {', '.join(allowed)}")


def _too_big(cap: int) -> FetchRefused:
    return FetchRefused(f"the media is larger than this server's limit of {cap} bytes")


def _essence(content_type: str | None) -> str | None:
    if not content_type:
        return None
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence if "/" in essence else None


def decode_data_url(url: str, max_bytes: int) -> FetchedMedia:
    """Decode a data: URL (base64 or percent-encoded); the size cap applies to the decoded bytes."""
    head, sep, payload = url[5:].partition(",")
    if not sep:
        raise FetchRefused("the data: URL has no ',' before its data")
    params = [p.strip() for p in head.split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    content_type = _essence(params[0])
    if is_base64:
        text = unquote(payload) if "%" in payload else payload
        text = "".join(text.split())
        if len(text) // 4 * 3 - text.count("=") > max_bytes:
            raise _too_big(max_bytes)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise FetchRefused("the data: URL is not valid base64") from None
    else:
        if len(payload) // 3 > max_bytes:  # percent-decoding shrinks at most 3:1
            raise _too_big(max_bytes)
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise _too_big(max_bytes)
    return FetchedMedia(data, content_type, "data")


def _read_file(path: Path, shown: str, max_bytes: int) -> bytes:
    """Read a regular file of at most max_bytes (worker thread); the last component must not be a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FetchRefused(f"the file {shown!r} does not exist in the allowed local media directory") from None
    except OSError:
        raise FetchRefused(f"the file {shown!r} cannot be read") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FetchRefused(f"{shown!r} is not a regular file")
        if info.st_size > max_bytes:
            raise _too_big(max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _too_big(max_bytes)
    return data
