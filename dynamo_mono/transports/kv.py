"""The KV-block transfer seam: a transport publishes pinned buffers by key; a peer fetches them by endpoint."""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from dynamo_mono.engine import KvEndpoint


class KvTransferError(ConnectionError):
    """A KV fetch failed (unknown key, peer gone, size mismatch)."""


class KvTransport(Protocol):
    """Moves published byte buffers from the process that holds them to the one that asks."""

    name: str

    async def start(self) -> KvEndpoint:
        """Start serving; returns the endpoint peers pass to fetch() (advertised in ModelCard.kv_endpoint)."""
        ...

    def publish(self, key: str, buf: bytearray, on_done: Callable[[], None] | None = None) -> None:
        """Hold buf for one fetch under key (until fetched, released or expired; then on_done())."""
        ...

    def release(self, key: str) -> None: ...

    async def fetch(self, endpoint: KvEndpoint, key: str, nbytes: int) -> bytearray:
        """Copy the peer's buffer `key` (exactly nbytes) into local memory; KvTransferError on failure."""
        ...

    async def stop(self) -> None: ...


class Published:
    """Buffers held for peers, expiring after ttl seconds so an unclaimed transfer cannot leak memory."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self.items: dict[str, tuple[bytearray, float, Callable[[], None] | None]] = {}

    def put(self, key: str, buf: bytearray, on_done: Callable[[], None] | None = None) -> None:
        self.expire()
        self.pop(key)
        self.items[key] = (buf, time.monotonic() + self.ttl, on_done)

    def get(self, key: str) -> bytearray | None:
        item = self.items.get(key)
        return None if item is None else item[0]

    def take(self, key: str) -> bytearray | None:
        """The buffer, removed (its on_done runs now: the caller sends from its own reference)."""
        item = self.items.pop(key, None)
        if item is None:
            return None
        if item[2] is not None:
            item[2]()
        return item[0]

    def pop(self, key: str) -> None:
        self.take(key)

    def expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, item in self.items.items() if item[1] < now]:
            self.take(k)


def create_kv_transport(plugins: Any, name: str, **kwargs: Any) -> KvTransport:
    """A registered transport by name; "auto" = nixl when usable, else tcp."""
    regs = plugins.registered("transport")
    if name == "auto":
        nixl = regs.get("nixl")
        name = "nixl" if nixl is not None and not nixl.missing() else "tcp"
    reg = plugins.get("transport", name)
    missing = reg.missing()
    if missing:
        hint = f"; install with: {reg.install_hint}" if reg.install_hint else ""
        raise LookupError(f"transport {name!r} needs {', '.join(missing)}{hint}")
    return reg.factory(**kwargs)
