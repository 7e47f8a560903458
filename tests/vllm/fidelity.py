"""Runs one request sequence on an engine and labels its KV events by block content, for engine comparisons.

Block hashes differ between engines (vLLM's sha256 vs our xxh3), so a block is named by its content:
(first request whose token sequence holds this block's whole prefix, block index). Generated tokens
differ between engines too, which the per-engine sequences (prompt + that engine's output) absorb.
"""

from __future__ import annotations

import random
from difflib import SequenceMatcher

from dynamo_mono.engine import EngineRequest, SamplingParams, StopConditions
from dynamo_mono.kv_events import BlockRemoved, BlockStored, KvEventBatch


def workload(seed: int = 3, n: int = 16, vocab: tuple[int, int] = (10, 2600)) -> list[list[int]]:
    """Prompts sharing a few document prefixes (multi-block), each with its own suffix."""
    rng = random.Random(seed)
    docs = [[rng.randrange(*vocab) for _ in range(rng.randrange(64, 170))] for _ in range(3)]
    return [docs[rng.randrange(3)] + [rng.randrange(*vocab) for _ in range(rng.randrange(5, 70))]
            for _ in range(n)]


async def run_sequence(engine, prompts: list[list[int]], max_tokens: int,
                       block_size: int) -> tuple[list[KvEventBatch], list[list[int]]]:
    """Requests one after another (each finishes and its KV events arrive first); returns the KV event batches
    and full sequences."""
    import asyncio
    import time

    batches: list[KvEventBatch] = []
    engine.set_kv_event_sink(batches.append)
    seqs = []
    for i, prompt in enumerate(prompts):
        req = EngineRequest(f"fid-{i}", list(prompt), SamplingParams(temperature=0.0),
                            StopConditions(max_tokens=max_tokens, ignore_eos=True))
        out: list[int] = []
        async for o in engine.generate(req):
            out.extend(o.token_ids)
            assert o.finish_reason in (None, "length"), o
        seq = list(prompt) + out
        seqs.append(seq)
        # vLLM publishes from another process: wait for the store of the sequence's last full block (its
        # output makes it new), with a deadline only as a hang guard
        end = (len(seq) - 1) // block_size * block_size
        last = seq[end - block_size:end]
        deadline = time.monotonic() + 30
        while not _stored(batches, last, block_size):
            assert time.monotonic() < deadline, f"no KV event for the last block of request {i}"
            await asyncio.sleep(0.01)
    engine.set_kv_event_sink(None)
    return batches, seqs


def _stored(batches: list[KvEventBatch], block: list[int], block_size: int) -> bool:
    return any(isinstance(ev, BlockStored) and any(ev.token_ids[j * block_size:(j + 1) * block_size] == block
                                                   for j in range(len(ev.block_hashes)))
               for b in batches for ev in b.events)


def labelled_events(batches: list[KvEventBatch], seqs: list[list[int]], block_size: int) -> list[tuple]:
    """[("S"|"R", request index, block index)] in event order."""
    prefix_of: dict[int, tuple[int, ...]] = {}
    out: list[tuple] = []

    def label(prefix: tuple[int, ...]) -> tuple[int, int]:
        n = len(prefix)
        for r, s in enumerate(seqs):
            if len(s) >= n and tuple(s[:n]) == prefix:
                return r, n // block_size - 1
        return -1, n // block_size - 1

    for batch in batches:
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                parent = prefix_of.get(ev.parent_block_hash, ()) if ev.parent_block_hash is not None else ()
                for i, h in enumerate(ev.block_hashes):
                    parent = parent + tuple(ev.token_ids[i * block_size:(i + 1) * block_size])
                    prefix_of[h] = parent
                    out.append(("S", *label(parent)))
            elif isinstance(ev, BlockRemoved):
                for h in ev.block_hashes:
                    out.append(("R", *label(prefix_of.get(h, ()))) if h in prefix_of else ("R", -2, -2))
    return out


def agreement(a: list[tuple], b: list[tuple]) -> float:
    """Fraction of events the two ordered streams have in common (2 * matches / total)."""
    if not a and not b:
        return 1.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()
