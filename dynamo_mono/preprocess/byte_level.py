"""Byte-level BPE decoding without the tokenizer: a table from token id to the bytes it stands for.

GPT-2-style byte-level vocabularies (Llama 3, Qwen, GPT-OSS, …) spell every byte as one printable
character. With the table, streaming detokenization is a bytes join plus an incremental UTF-8 decoder:
the same text as `tokenizers`' decode, at a fraction of the per-token cost of a call into it.
"""

from __future__ import annotations

from typing import Any


def bytes_to_unicode() -> list[str]:
    """GPT-2's bytes_to_unicode(): the printable character that stands for each byte value 0..255."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def _unicode_to_byte() -> dict[str, int]:
    """Inverse of bytes_to_unicode()."""
    return {ch: b for b, ch in enumerate(bytes_to_unicode())}


def byte_table(hf: Any) -> tuple[list[bytes], frozenset[int]] | None:
    """(bytes of every token id, ids of special added tokens), or None when `hf` is not plain byte-level BPE."""
    if type(hf.decoder).__name__ != "ByteLevel" or type(hf.model).__name__ != "BPE":
        return None
    to_byte = _unicode_to_byte()
    size = hf.get_vocab_size(with_added_tokens=True)
    table: list[bytes] = [b""] * size
    for token, i in hf.get_vocab(with_added_tokens=False).items():
        try:
            table[i] = bytes(to_byte[ch] for ch in token)
        except (KeyError, IndexError):
            return None  # not a byte-level vocabulary after all
    special = set()
    for i, added in hf.get_added_tokens_decoder().items():
        if i < size:
            table[i] = added.content.encode("utf-8")
        if added.special:
            special.add(i)
    return table, frozenset(special)
