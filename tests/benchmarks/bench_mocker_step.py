"""Mocker simulation cost per scheduled sequence per step at speedup 0 (goal <= 20 us).

Runs N concurrent ignore_eos requests through MockerEngine with real async consumers and prints
wall time / (sum over steps of scheduled sequences). Usage: python3 tests/benchmarks/bench_mocker_step.py [--seqs 256]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from dynamo_mono.engine import EngineArgs, EngineRequest, SamplingParams, StopConditions
from mocker.engine import MockerEngine


async def run(seqs: int, max_tokens: int, prompt_len: int, block_size: int) -> tuple[float, int, int]:
    args = EngineArgs("bench", "bench", 0, 1 << 20, [2], 32000,
                      {"speedup_ratio": 0.0, "block_size": block_size, "max_num_seqs": seqs})
    engine = MockerEngine(args)
    await engine.start()

    async def consume(i: int) -> int:
        req = EngineRequest(f"r{i}", [(i * 31 + j) % 30000 + 10 for j in range(prompt_len)], SamplingParams(),
                            StopConditions(max_tokens=max_tokens, ignore_eos=True, eos_token_ids=[2]))
        n = 0
        async for out in engine.generate(req):
            n += len(out.token_ids)
        return n

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(consume(i) for i in range(seqs)))
    wall = time.perf_counter() - t0
    sched = engine.ranks[0]
    assert sum(counts) == seqs * max_tokens
    await engine.stop()
    return wall, sched.steps, sched.seq_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seqs", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=400)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop (as the server does)")
    ap.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    a = ap.parse_args()
    if a.uvloop:
        import uvloop

        uvloop.install()
    coro = run(a.seqs, a.max_tokens, a.prompt_len, a.block_size)
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        wall, steps, seq_steps = asyncio.run(coro)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    else:
        wall, steps, seq_steps = asyncio.run(coro)
    us = wall / seq_steps * 1e6
    print(f"seqs={a.seqs} steps={steps} seq_steps={seq_steps} wall={wall:.3f}s "
          f"cost_per_seq_step={us:.2f}us goal<=20us {'OK' if us <= 20 else 'MISSED'}")


if __name__ == "__main__":
    main()
