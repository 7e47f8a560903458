"""Workload traces: mooncake-style JSONL loading and synthetic prefix-group workloads, as token-id requests.

A mooncake record is ``{"timestamp": ms, "input_length": N, "output_length": M, "hash_ids": [..],
"session_id": optional}``; hash id h stands for one block of ``trace_block_size`` tokens whose ids
are a deterministic function of h, so equal hash-id prefixes give equal token prefixes (and equal
chained block hashes at any engine block size dividing trace_block_size).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Iterator

import numpy as np

from mocker.outputs import mix64

DEFAULT_TRACE_BLOCK_SIZE = 512
TOKEN_LO, TOKEN_HI = 100, 30000  # generated token ids stay clear of low special ids


@dataclass(slots=True)
class TraceRequest:
    """One request of a workload: when to send it, its prompt tokens and how many tokens to generate."""

    timestamp_ms: float
    token_ids: list[int]
    output_length: int
    session_id: str | None = None


class TraceError(ValueError):
    """A trace line is malformed; the message names the line and the field."""


class BlockTokens:
    """Deterministic token ids for hash ids (cached, one numpy draw per distinct hash id)."""

    def __init__(self, block_size: int = DEFAULT_TRACE_BLOCK_SIZE, lo: int = TOKEN_LO, hi: int = TOKEN_HI) -> None:
        self.block_size = block_size
        self.lo, self.hi = lo, hi
        self._cache: dict[int, list[int]] = {}

    def block(self, hash_id: int) -> list[int]:
        toks = self._cache.get(hash_id)
        if toks is None:
            rng = np.random.default_rng(mix64(hash_id & ((1 << 64) - 1)))
            toks = rng.integers(self.lo, self.hi, size=self.block_size).tolist()
            if len(self._cache) >= 2048:  # bounded: drop the oldest entry
                del self._cache[next(iter(self._cache))]
            self._cache[hash_id] = toks
        return toks

    def prompt(self, hash_ids: list[int], input_length: int) -> list[int]:
        """Concatenate the blocks of hash_ids, cut to input_length (padding with fresh blocks if short)."""
        out: list[int] = []
        for h in hash_ids:
            if len(out) >= input_length:
                break
            out.extend(self.block(h))
        extra = 0
        while len(out) < input_length:
            # The trace has fewer hash ids than tokens: pad with blocks unique to this prompt's content.
            out.extend(self.block(mix64((hash_ids[-1] if hash_ids else 0) ^ (0xBAD5EED + extra))))
            extra += 1
        return out[:input_length]


def _field(rec: dict, name: str, where: str, types: tuple, required: bool = True):
    if name not in rec:
        if required:
            raise TraceError(f"{where}: missing field {name!r}")
        return None
    v = rec[name]
    if isinstance(v, bool) or not isinstance(v, types):
        raise TraceError(f"{where}: field {name!r} has invalid value {v!r}")
    return v


def load_mooncake(source: str | IO[str], *, trace_block_size: int = DEFAULT_TRACE_BLOCK_SIZE) -> Iterator[TraceRequest]:
    """Stream a mooncake JSONL trace (path or open text file), one TraceRequest per non-empty line."""
    blocks = BlockTokens(trace_block_size)
    if isinstance(source, str):
        with open(source, encoding="utf-8") as fh:
            yield from _parse(fh, source, blocks)
    else:
        yield from _parse(source, getattr(source, "name", "<trace>"), blocks)


def _parse(lines: IO[str], name: str, blocks: BlockTokens) -> Iterator[TraceRequest]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name} line {n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise TraceError(f"{where}: expected a JSON object")
        ts = _field(rec, "timestamp", where, (int, float))
        isl = _field(rec, "input_length", where, (int,))
        osl = _field(rec, "output_length", where, (int,))
        hash_ids = _field(rec, "hash_ids", where, (list,), required=False) or []
        if isl < 0:
            raise TraceError(f"{where}: field 'input_length' has invalid value {isl!r}")
        if osl < 0:
            raise TraceError(f"{where}: field 'output_length' has invalid value {osl!r}")
        if any(isinstance(h, bool) or not isinstance(h, int) for h in hash_ids):
            raise TraceError(f"{where}: field 'hash_ids' must be a list of integers")
        sid = rec.get("session_id")
        yield TraceRequest(float(ts), blocks.prompt(hash_ids, isl), osl, None if sid is None else str(sid))


def synthesize_prefix_groups(groups: int, users_per_group: int, prefix_len: int, suffix_len: int,
                             output_length: int, *, interval_ms: float = 0.0, seed: int = 0,
                             trace_block_size: int = DEFAULT_TRACE_BLOCK_SIZE) -> Iterator[TraceRequest]:
    """G groups x U users: each prompt = its group's shared prefix + a unique suffix; users interleaved
    round-robin across groups, one request every interval_ms."""
    blocks = BlockTokens(trace_block_size)
    prefixes = []
    for g in range(groups):
        base = mix64((seed << 20) ^ (g + 1))
        prefixes.append(blocks.prompt([base + i for i in range(-(-prefix_len // trace_block_size))], prefix_len))
    i = 0
    for u in range(users_per_group):
        for g in range(groups):
            ubase = mix64((seed << 40) ^ (g << 20) ^ (u + 1) ^ 0x5EED)
            n_sfx = -(-suffix_len // trace_block_size)
            suffix = blocks.prompt([ubase + j for j in range(n_sfx)], suffix_len) if suffix_len else []
            yield TraceRequest(i * interval_ms, prefixes[g] + suffix, output_length, f"g{g}-u{u}")
            i += 1
