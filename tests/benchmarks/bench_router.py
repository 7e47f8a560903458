"""Router benchmark: KV event ingest rate and per-request routing decision latency (prints figures).

Run: python3 tests/benchmarks/bench_router.py [--blocks 1048576] [--instances 16]
Goals: decision p50 <= 50 us for a 4k-token prompt with 1M blocks indexed over 16 instances (find
matches + selection + load tracking, hashing reported apart); ingest >= 1M block events/s.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

from prometheus_client import CollectorRegistry

from dynamo_mono.block_hash import block_hashes
from dynamo_mono.config import defaults
from dynamo_mono.kv_events import BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.router import ROUTER_OPTIONS, Router

PROMPT_TOKENS = 4096


def make_router(block_size: int, instances: int) -> Router:
    settings = defaults(ROUTER_OPTIONS).replace(router_mode="kv")
    router = Router(settings, block_size=block_size, registry=CollectorRegistry(), model="bench",
                    rng=random.Random(0))
    for w in range(instances):
        router.add_instance((w, 0), total_blocks=1 << 20)
    return router


def make_batches(total_blocks: int, instances: int, chain_len: int, batch_blocks: int,
                 rng: random.Random) -> tuple[list[KvEventBatch], list[list[int]]]:
    """BlockStored batches of batch_blocks blocks; chains share a system-prompt prefix per group."""
    per_instance = total_blocks // instances
    chains_per_instance = per_instance // chain_len
    prefixes = [[rng.getrandbits(64) for _ in range(chain_len // 2)] for _ in range(8)]
    batches: list[KvEventBatch] = []
    chains: list[list[int]] = []
    event_id = [0] * instances
    for c in range(chains_per_instance):
        for w in range(instances):
            prefix = prefixes[(c + w) % len(prefixes)]
            chain = prefix + [rng.getrandbits(64) for _ in range(chain_len - len(prefix))]
            chains.append(chain)
            for i in range(0, chain_len, batch_blocks):
                event_id[w] += 1
                parent = chain[i - 1] if i else None
                batches.append(KvEventBatch(w, 0, event_id[w], [BlockStored(chain[i:i + batch_blocks], parent)]))
    return batches, chains


def bench_ingest(block_size: int, total_blocks: int, instances: int, batch_blocks: int) -> tuple[Router, list[list[int]]]:
    rng = random.Random(1)
    router = make_router(block_size, instances)
    chain_len = PROMPT_TOKENS // block_size
    batches, chains = make_batches(total_blocks, instances, chain_len, batch_blocks, rng)
    n_blocks = sum(len(b.events[0].block_hashes) for b in batches)
    gc.disable()
    t0 = time.perf_counter()
    for b in batches:
        router.on_kv_events(b)
    dt = time.perf_counter() - t0
    gc.enable()
    print(f"  ingest BlockStored x{batch_blocks}: {n_blocks / dt / 1e6:.2f} M block events/s "
          f"({n_blocks} blocks, {len(batches)} batches, {dt:.2f} s); tree nodes {router.indexer.size()}")
    # steady state: evict and re-store the same number of blocks (mixed stream)
    mixed: list[KvEventBatch] = []
    eid = {w: 10**9 for w in range(instances)}
    for chain_i, chain in enumerate(chains[: max(1, len(chains) // 8)]):
        w = chain_i % instances
        tail = chain[chain_len // 2:]
        for i in range(0, len(tail), batch_blocks):
            eid[w] += 1
            mixed.append(KvEventBatch(w, 0, eid[w], [BlockRemoved(tail[i:i + batch_blocks])]))
        for i in range(0, len(tail), batch_blocks):
            eid[w] += 1
            mixed.append(KvEventBatch(w, 0, eid[w], [BlockStored(tail[i:i + batch_blocks], None)]))
    for w in range(instances):  # the mixed stream starts a new id sequence: resync baseline
        router.indexer._state[(w, 0)].last_event_id = None
    n_mixed = sum(len(b.events[0].block_hashes) for b in mixed)
    gc.disable()
    t0 = time.perf_counter()
    for b in mixed:
        router.on_kv_events(b)
    dt = time.perf_counter() - t0
    gc.enable()
    print(f"  ingest remove+store mix x{batch_blocks}: {n_mixed / dt / 1e6:.2f} M block events/s")
    return router, chains


def bench_ingest_rehash(block_size: int, instances: int, batch_blocks: int, total_blocks: int = 1 << 16) -> None:
    """Engines with their own hash function (vLLM, SGLang): the router re-hashes token ids."""
    rng = random.Random(4)
    router = make_router(block_size, instances)
    batches = []
    per_chain = PROMPT_TOKENS // block_size
    eid = [0] * instances
    for c in range(total_blocks // per_chain):
        w = c % instances
        tokens = [rng.randrange(150_000) for _ in range(PROMPT_TOKENS)]
        theirs = [rng.getrandbits(64) for _ in range(per_chain)]
        for i in range(0, per_chain, batch_blocks):
            eid[w] += 1
            ev = BlockStored(theirs[i:i + batch_blocks], theirs[i - 1] if i else None,
                             tokens[i * block_size:(i + batch_blocks) * block_size])
            batches.append(KvEventBatch(w, 0, eid[w], [ev]))
    gc.disable()
    t0 = time.perf_counter()
    for b in batches:
        router.on_kv_events(b)
    dt = time.perf_counter() - t0
    gc.enable()
    assert router.indexer.size() == total_blocks // per_chain * per_chain
    print(f"  ingest BlockStored x{batch_blocks} with token ids, engine's own hashes (re-hashed): "
          f"{total_blocks / dt / 1e6:.2f} M block events/s")


def bench_decisions(router: Router, chains: list[list[int]], block_size: int, n: int = 3000) -> None:
    rng = random.Random(2)
    chain_len = PROMPT_TOKENS // block_size
    prompts = []
    for _ in range(256):
        chain = rng.choice(chains)
        keep = rng.randint(chain_len // 4, chain_len)  # cached prefix, then a new suffix
        prompts.append(chain[:keep] + [rng.getrandbits(64) for _ in range(chain_len - keep)])
    samples = []
    finds = []
    indexer = router.indexer
    allowed = router.instances()  # the serving pool passes the ready instances as a list
    gc.disable()
    for i in range(n):
        p = prompts[i % len(prompts)]
        t0 = time.perf_counter_ns()
        router.select(f"r{i}", p, PROMPT_TOKENS, allowed=allowed)
        t1 = time.perf_counter_ns()
        indexer.find_matches(p)
        t2 = time.perf_counter_ns()
        samples.append(t1 - t0)
        finds.append(t2 - t1)
        if i >= 64:  # keep ~64 requests in flight
            router.on_finish(f"r{i - 64}")
    gc.enable()
    samples.sort()
    p50 = statistics.median(samples) / 1e3
    p99 = samples[int(len(samples) * 0.99)] / 1e3
    print(f"  decision (select: find_matches + cost + load tracking + metrics): p50 {p50:.1f} us, "
          f"p99 {p99:.1f} us   [find_matches alone p50 {statistics.median(finds) / 1e3:.1f} us]")


def bench_hashing(block_size: int, n: int = 2000) -> None:
    rng = random.Random(3)
    tokens = [rng.randrange(150_000) for _ in range(PROMPT_TOKENS)]
    t = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        block_hashes(tokens, block_size)
        t.append(time.perf_counter_ns() - t0)
    print(f"  block hashing of {PROMPT_TOKENS} tokens (caller side): p50 {statistics.median(t) / 1e3:.1f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=1 << 20)
    ap.add_argument("--instances", type=int, default=16)
    args = ap.parse_args()
    for block_size in (64, 16):
        print(f"block size {block_size} ({PROMPT_TOKENS // block_size} blocks per 4k prompt), "
              f"{args.blocks} blocks over {args.instances} instances")
        router, chains = bench_ingest(block_size, args.blocks, args.instances, batch_blocks=16)
        bench_ingest_rehash(block_size, args.instances, batch_blocks=16)
        bench_decisions(router, chains, block_size)
        bench_hashing(block_size)
        del router, chains
        gc.collect()


if __name__ == "__main__":
    main()
