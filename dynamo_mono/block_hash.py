"""The one block-hash function shared by preprocessor, router, mocker and trace tools.

Chained xxh3-64 over little-endian u32 token ids, seed 1337 (Dynamo's choice): block i's hash
covers its own tokens and the hash of block i-1, so equal hashes mean equal prefixes.
"""

from __future__ import annotations

from array import array

import xxhash

SEED = 1337
_xxh = xxhash.xxh3_64_intdigest


def block_hash(parent: int | None, tokens: list[int] | tuple[int, ...]) -> int:
    """Hash of one full block given its parent block's hash (None for the first block)."""
    data = array("I", tokens).tobytes()
    if parent is not None:
        data = parent.to_bytes(8, "little") + data
    return _xxh(data, SEED)


def block_hashes(token_ids: list[int], block_size: int, parent: int | None = None) -> list[int]:
    """Chained hashes of every full block of token_ids (a trailing partial block is not hashed)."""
    n_full = len(token_ids) // block_size
    if n_full == 0:
        return []
    buf = array("I", token_ids[: n_full * block_size]).tobytes()
    step = block_size * 4
    out: list[int] = []
    prev = parent
    for i in range(n_full):
        chunk = buf[i * step : (i + 1) * step]
        if prev is not None:
            chunk = prev.to_bytes(8, "little") + chunk
        prev = _xxh(chunk, SEED)
        out.append(prev)
    return out
