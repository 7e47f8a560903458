"""Storage of generated media asked for as URLs: fsspec filesystems, safe names, bounded age and size.

Files go under `--media-output-fs-url` (a local directory by default, any fsspec URL such as s3://bucket/prefix
when its backend is installed) at `KIND/REQUEST/INDEX-RANDOM.EXT`: every path component is made by the server
(the request id is reduced to [A-Za-z0-9_-]), so a client cannot name a path. The store deletes only files it
wrote itself: each after `--media-retention-seconds`, and the oldest first whenever the total would pass
`--media-max-stored-bytes` (the newest file is kept whatever its size). I/O runs on worker threads.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from dynamo_mono.media.contract import MediaFile

log = logging.getLogger("dynamo_mono.media.store")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
# A stored path as the GET route accepts it: exactly what `put` makes, nothing else (no "..", no absolute path).
STORED_PATH = re.compile(r"^(image|video|audio)/[A-Za-z0-9_-]{1,80}/[0-9]{1,3}-[0-9a-f]{32}\.[a-z0-9]{2,5}$")


class MediaNotFound(LookupError):
    """No stored file at that path (never written, expired, or evicted)."""


@dataclass(slots=True)
class _Stored:
    size: int
    written: float  # time.monotonic()
    content_type: str


class MediaStore:
    """Writes media files and answers reads of the ones it wrote; expires them by age and total size."""

    def __init__(self, fs_url: str | None, http_url: str | None, *, retention_s: float, max_bytes: int) -> None:
        self._fs_url = fs_url
        self.http_url = http_url.rstrip("/") if http_url else None
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self._fs: Any = None
        self._root = ""
        self._tmpdir: str | None = None
        self._files: collections.OrderedDict[str, _Stored] = collections.OrderedDict()  # oldest first
        self._bytes = 0
        self._lock = asyncio.Lock()

    def _filesystem(self) -> tuple[Any, str]:
        """The fsspec filesystem and root, made on first use (a temporary directory when no URL was given)."""
        if self._fs is None:
            import fsspec

            url = self._fs_url
            if url is None:
                self._tmpdir = url = tempfile.mkdtemp(prefix="dynamo-mono-media-")
            self._fs, root = fsspec.core.url_to_fs(url)
            self._root = root.rstrip("/")
        return self._fs, self._root

    async def put(self, kind: str, request_id: str, index: int, file: MediaFile) -> str:
        """Store one file; returns its path relative to the store (for `url`)."""
        rid = _UNSAFE.sub("_", request_id)[-80:] or "request"
        path = f"{kind}/{rid}/{index}-{secrets.token_hex(16)}.{_UNSAFE.sub('', file.extension)[:5] or 'bin'}"
        fs, root = self._filesystem()
        full = f"{root}/{path}"

        def write() -> None:
            fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(full, file.data)

        await asyncio.to_thread(write)
        async with self._lock:
            self._files[path] = _Stored(len(file.data), time.monotonic(), file.content_type)
            self._bytes += len(file.data)
            await self._expire_locked()
        return path

    def url(self, path: str, server_base: str) -> str:
        """The URL a client fetches a stored path from: under --media-output-http-url, else this server's."""
        return f"{self.http_url}/{path}" if self.http_url else f"{server_base.rstrip('/')}/media/{path}"

    async def get(self, path: str) -> tuple[bytes, str]:
        """The bytes and content type of a stored file; MediaNotFound when it is not (or no longer) stored."""
        async with self._lock:
            await self._expire_locked()
            entry = self._files.get(path) if STORED_PATH.match(path) else None
        if entry is None:
            raise MediaNotFound(path)
        fs, root = self._filesystem()
        try:
            data = await asyncio.to_thread(fs.cat_file, f"{root}/{path}")
        except FileNotFoundError:
            raise MediaNotFound(path) from None
        return data, entry.content_type

    async def expire(self) -> None:
        """Delete files past their retention, then the oldest ones until the total fits the size cap."""
        async with self._lock:
            await self._expire_locked()

    async def _expire_locked(self) -> None:
        cutoff = time.monotonic() - self.retention_s
        doomed = []
        while self._files:
            path, entry = next(iter(self._files.items()))
            # The newest file stays whatever its size (its URL was just handed out); age removes it like any other.
            over = self._bytes > self.max_bytes and len(self._files) > 1
            if entry.written > cutoff and not over:
                break
            self._files.popitem(last=False)
            self._bytes -= entry.size
            doomed.append(path)
        if doomed:
            fs, root = self._filesystem()
            await asyncio.to_thread(_remove, fs, [f"{root}/{p}" for p in doomed])

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        """Remove the temporary directory (a configured store keeps its files for whoever serves them)."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _remove(fs: Any, paths: list[str]) -> None:
    for p in paths:
        try:
            fs.rm_file(p)
        except FileNotFoundError:
            pass
        except OSError as exc:  # a read-only or flaky backend: report, keep serving
            log.warning("could not delete stored media %s: %s", p, exc)
