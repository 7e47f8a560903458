"""An LRU cache of decoded media keyed by content digest and decode options, capped in bytes.

Thread-safe (one lock around each operation), so the event loop can look up and insert while decode
threads run. Values are shared by every request that hits them: decoders return read-only arrays.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class MediaKey:
    """What identifies a decoded result: the kind, the SHA-256 of the encoded bytes, the decode options."""

    kind: str  # "image" | "video" | "audio"
    digest: bytes  # media.decode.content_digest(data)
    options: Hashable = None  # e.g. a VideoOptions; None where decoding takes none


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class MediaCache(Generic[V]):
    """Least-recently-used entries go first once the held bytes pass max_bytes; max_bytes 0 keeps nothing.

    `hits` / `misses` count get() calls; `evictions` counts entries pushed out by the byte cap.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._bytes = 0
        self._entries: OrderedDict[MediaKey, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: MediaKey) -> V | None:
        """The cached value (now most recently used), or None; counts a hit or a miss."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: MediaKey, value: V, nbytes: int) -> bool:
        """Insert (or refresh) an entry of nbytes, evicting the least recently used ones to fit; False (and
        nothing stored) when nbytes alone is over max_bytes."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, not {nbytes}")
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.max_bytes:
                return False
            while self._bytes + nbytes > self.max_bytes:
                _, (_, size) = self._entries.popitem(last=False)
                self._bytes -= size
                self.evictions += 1
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            return True

    def __contains__(self, key: MediaKey) -> bool:
        """Whether key is held (no hit or miss counted, no recency change)."""
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, self.evictions, len(self._entries), self._bytes,
                              self.max_bytes)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
