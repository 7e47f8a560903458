"""The one block-hash function shared by preprocessor, router, mocker and trace tools.

Chained xxh3-64 over little-endian u32 token ids, seed 1337 (Dynamo's choice): block i's hash
covers its own tokens and the hash of block i-1, so equal hashes mean equal prefixes.

Media (Dynamo's rule for multimodal routing): the content hash of every media item whose placeholder
tokens overlap a block is appended, as u64 little-endian, to that block's hashed bytes. Placeholder
tokens are the same for every image, so without this two requests with the same text and different
images would share block hashes; with it the first block an item touches differs, and by chaining so
does every block after it. Blocks before the first media block hash exactly as without media.

LoRA (Dynamo's rule): blocks of an adapter's requests are hashed with the seed lora_seed(name) =
1337 + xxh3_64(name) (mod 2^64), so an adapter never shares prefix hits with the base model or another adapter.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Sequence

import xxhash

SEED = 1337
_xxh = xxhash.xxh3_64_intdigest
_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class MediaSpan:
    """A media item's placeholder tokens: token_ids[start:start + length], and its 64-bit content hash."""

    content_hash: int
    start: int
    length: int

    def __post_init__(self) -> None:
        if not 0 <= self.content_hash < _U64:
            raise ValueError(f"a media content hash is an unsigned 64-bit integer, not {self.content_hash}")
        if self.start < 0 or self.length < 1:
            raise ValueError(f"a media span needs start >= 0 and length >= 1, not start={self.start} "
                             f"length={self.length}")


def lora_seed(lora_name: str | None) -> int:
    """The block-hash seed of an adapter's requests (SEED for the base model)."""
    if not lora_name:
        return SEED
    return (SEED + _xxh(lora_name.encode())) % _U64


def block_hash(parent: int | None, tokens: list[int] | tuple[int, ...], media_hashes: Sequence[int] = (),
               seed: int = SEED) -> int:
    """Hash of one full block given its parent block's hash (None for the first block) and the content
    hashes of the media items whose placeholders overlap it, in placeholder order."""
    data = array("I", tokens).tobytes()
    if parent is not None:
        data = parent.to_bytes(8, "little") + data
    if media_hashes:
        data += b"".join(h.to_bytes(8, "little") for h in media_hashes)
    return _xxh(data, seed)


def block_hashes(token_ids: list[int], block_size: int, parent: int | None = None,
                 media: Sequence[MediaSpan] = (), seed: int = SEED) -> list[int]:
    """Chained hashes of every full block of token_ids (a trailing partial block is not hashed), with the
    content hash of each media span mixed into every block its placeholder tokens overlap."""
    if media:
        return _block_hashes_media(token_ids, block_size, parent, media, seed)
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
        prev = _xxh(chunk, seed)
        out.append(prev)
    return out


def block_media(n_blocks: int, block_size: int, media: Sequence[MediaSpan]) -> dict[int, list[int]]:
    """Block index -> content hashes of the media spans overlapping it, for blocks below n_blocks. Ordered by
    position (Dynamo sorts by hash, which lets two items swapped inside one block hash alike), so the order
    the spans are listed in does not matter."""
    touched: dict[int, list[int]] = {}
    for span in _ordered(media):
        first = span.start // block_size
        last = min((span.start + span.length - 1) // block_size, n_blocks - 1)
        for b in range(first, last + 1):
            touched.setdefault(b, []).append(span.content_hash)
    return touched


def _ordered(media: Sequence[MediaSpan]) -> list[MediaSpan]:
    return sorted(media, key=lambda s: (s.start, s.length, s.content_hash))


def _block_hashes_media(token_ids: list[int], block_size: int, parent: int | None,
                        media: Sequence[MediaSpan], seed: int = SEED) -> list[int]:
    n_full = len(token_ids) // block_size
    if n_full == 0:
        return []
    extra = [b""] * n_full  # the packed media hashes each block appends
    for span in _ordered(media):
        packed = span.content_hash.to_bytes(8, "little")
        for b in range(span.start // block_size, min((span.start + span.length - 1) // block_size, n_full - 1) + 1):
            extra[b] += packed
    buf = array("I", token_ids[: n_full * block_size]).tobytes()
    step = block_size * 4
    out: list[int] = []
    prev = parent
    for i in range(n_full):
        chunk = buf[i * step : (i + 1) * step] + extra[i]
        if prev is not None:
            chunk = prev.to_bytes(8, "little") + chunk
        prev = _xxh(chunk, seed)
        out.append(prev)
    return out
