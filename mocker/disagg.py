"""Disaggregated prefill/decode in the mocker: prefill publishes a prompt's KV bytes, decode pulls them.

A prefill-mode instance runs the prompt, emits the first token, then keeps the prompt's full KV blocks
pinned and publishes their bytes (--kv-bytes-per-block each, filled from the block hash so the receiver
can check them) through a KV transport. A decode instance handed `request.kv_transfer` pulls the bytes,
verifies them and enters the blocks into its prefix cache, so its own prefill only covers the tail.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dynamo_mono.config import ConfigError, Option
from dynamo_mono.engine import KvEndpoint, KvTransferParams
from mocker.kv_manager import KvManager

log = logging.getLogger("dynamo_mono.mocker.disagg")

_G = "engine: mocker"
KiB = 1024

DISAGG_OPTIONS: list[Option] = [
    Option("disaggregation_mode", str, "agg", "agg: full requests; prefill: prompt + first token, KV handed to a "
           "decode instance; decode: continues from KV pulled from a prefill instance", _G,
           choices=("agg", "prefill", "decode")),
    Option("kv_bytes_per_block", int, 64 * KiB, "bytes of simulated KV per block moved in disaggregated serving",
           _G, min=8),
    Option("kv_transport", str, "auto", "KV transfer transport: auto (nixl when installed, else tcp), tcp, nixl", _G),
    Option("kv_transfer_host", str, "127.0.0.1", "address this instance's KV transfer endpoint binds to and "
           "advertises", _G),
]

PIN_TTL_S = 30.0


def block_bytes(hashes: list[int], bytes_per_block: int) -> bytearray:
    """The simulated KV of these blocks: each block filled with its 64-bit hash (receiver-checkable)."""
    words = bytes_per_block // 8
    arr = np.repeat(np.array(hashes, dtype=np.uint64), words)
    buf = bytearray(len(hashes) * bytes_per_block)
    np.frombuffer(buf, dtype=np.uint64, count=len(arr))[:] = arr
    return buf


def check_bytes(buf: bytearray | memoryview, hashes: list[int], bytes_per_block: int) -> bool:
    if len(buf) != len(hashes) * bytes_per_block:
        return False
    heads = np.frombuffer(buf, dtype=np.uint64)[:: bytes_per_block // 8][: len(hashes)] if hashes else []
    return bool(np.array_equal(heads, np.array(hashes, dtype=np.uint64)))


def import_blocks(kv: KvManager, hashes: list[int], tokens: list[int],
                  media: dict[int, list[int]] | None = None) -> int:
    """Enter pulled blocks into the prefix cache (unreferenced, so the next request hits them); count entered.
    `media`: block index -> media content hashes mixed into its hash."""
    hit = kv.match_prefix(hashes, len(hashes))
    blocks: list[int] = []
    if not kv.allocate(blocks, len(hashes) - len(hit), hit_blocks=hit):
        return 0
    kv.commit(blocks, hashes, tokens, len(hit), len(hashes), media)
    kv.free_blocks(blocks)
    return len(hashes)


class DisaggAgent:
    """The KV transfer side of one mocker instance."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.mode: str = opts["disaggregation_mode"]
        self.bytes_per_block: int = opts["kv_bytes_per_block"]
        if self.bytes_per_block % 8:
            raise ConfigError(f"--kv-bytes-per-block={self.bytes_per_block} must be a multiple of 8")
        self.transport_name: str = opts["kv_transport"]
        self.host: str = opts["kv_transfer_host"]
        self.transport: Any = None
        self.endpoint: KvEndpoint | None = None
        self.pulled_bytes = 0
        self.failed_pulls = 0  # pulls that failed (the prompt was computed locally)

    async def start(self) -> None:
        from dynamo_mono.plugins import get_plugins
        from dynamo_mono.transports.kv import create_kv_transport

        try:
            self.transport = create_kv_transport(get_plugins(), self.transport_name, host=self.host,
                                                 ttl=PIN_TTL_S)
        except LookupError as exc:
            raise ConfigError(f"--kv-transport={self.transport_name}: {exc}") from None
        self.endpoint = await self.transport.start()

    async def stop(self) -> None:
        if self.transport is not None:
            await self.transport.stop()

    def advertised_endpoint(self) -> KvEndpoint | None:
        """What ModelCard.kv_endpoint carries: the transport endpoint of a started prefill instance."""
        return self.endpoint if self.mode == "prefill" else None

    def publish(self, key: str, kv: KvManager, hashes: list[int]) -> None:
        """Pin the prompt's cached blocks and publish their bytes until fetched (or PIN_TTL_S)."""
        pinned: list[int] = []
        hit = kv.match_prefix(hashes, len(hashes))
        kv.allocate(pinned, 0, hit_blocks=hit)
        n = len(hit)

        def unpin() -> None:
            kv.free_blocks([b for b in pinned if kv.ref[b] > 0])  # a crash may have cleared the pool

        self.transport.publish(key, block_bytes(hashes[:n], self.bytes_per_block), on_done=unpin)

    async def pull(self, transfer: KvTransferParams, hashes: list[int]) -> bool:
        """Fetch and check the bytes of `hashes` named by transfer; False (caller prefills locally) on failure."""
        n = transfer.num_blocks
        if n <= 0 or self.transport is None:
            return False
        endpoint = transfer.endpoint
        if endpoint.transport != self.transport.name:
            log.warning("KV endpoint speaks %s, this instance %s: prefilling locally",
                        endpoint.transport, self.transport.name)
            return False
        try:
            buf = await self.transport.fetch(endpoint, transfer.key, n * self.bytes_per_block)
        except ConnectionError as exc:
            log.warning("KV pull of %s failed (%s): prefilling locally", transfer.key, exc)
            self.failed_pulls += 1
            return False
        if not check_bytes(buf, hashes[:n], self.bytes_per_block):
            log.warning("KV pull of %s returned wrong bytes: prefilling locally", transfer.key)
            self.failed_pulls += 1
            return False
        self.pulled_bytes += len(buf)
        return True
