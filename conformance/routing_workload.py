"""Prefix-group routing workload and driver: kv hit rate, TTFT and req/s of one server, or of the oracle.

Shared by conformance/test_routing_quality.py and tests/benchmarks/bench_routing.py. Each request is its
group's shared prefix plus a unique suffix, sent as token ids to /v1/completions (streaming). The oracle
pins every request of group g to instance g mod N (`nvext.backend_instance_id`): each group is kept on
one instance, the best placement the prefix cache allows when it holds every group.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from dataclasses import dataclass

import aiohttp

TOKEN_LO, TOKEN_HI = 100, 2600  # token ids valid for the mocker's default tokenizer


@dataclass(frozen=True, slots=True)
class Workload:
    """G groups; uniform: `users` rounds with one request per group in a seeded random order; zipf > 0:
    `users * groups` requests whose group is drawn with probability ~ 1 / rank**zipf."""

    groups: int = 8
    users: int = 6
    prefix_len: int = 512
    suffix_len: int = 64
    osl: int = 8
    seed: int = 0
    zipf: float = 0.0

    def requests(self) -> list[tuple[int, list[int]]]:
        """(group, prompt token ids) in send order."""
        rng = random.Random(self.seed)
        prefixes = [[rng.randrange(TOKEN_LO, TOKEN_HI) for _ in range(self.prefix_len)] for _ in range(self.groups)]
        n = self.groups * self.users
        if self.zipf > 0:
            weights = [1.0 / (r + 1) ** self.zipf for r in range(self.groups)]
            order = rng.choices(range(self.groups), weights, k=n)
        else:
            order = []
            for _ in range(self.users):
                round_ = list(range(self.groups))
                rng.shuffle(round_)
                order += round_
        return [(g, prefixes[g] + [rng.randrange(TOKEN_LO, TOKEN_HI) for _ in range(self.suffix_len)])
                for g in order]


@dataclass(frozen=True, slots=True)
class RunResult:
    hit_rate: float  # cached prompt tokens / prompt tokens, from the server's /metrics
    ttft_p50_ms: float
    ttft_p99_ms: float
    req_s: float
    lost_decisions: float  # kv decisions where a longer overlap elsewhere was passed over


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def worker_ids(metrics: str) -> list[int]:
    """Worker ids of the server's instances, from the router's per-instance load gauges."""
    ids = {int(m.group(1)) for m in re.finditer(
        r'^dynamo_component_router_active_requests{[^}]*worker_id="(\d+)"', metrics, re.M)}
    return sorted(ids)


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as r:
        return await r.text()


async def _one(session: aiohttp.ClientSession, url: str, model: str, prompt: list[int], osl: int,
               pin: int | None) -> float:
    body: dict = {"model": model, "prompt": prompt, "max_tokens": osl, "stream": True, "ignore_eos": True}
    if pin is not None:
        body["nvext"] = {"backend_instance_id": pin}
    t0 = time.perf_counter()
    ttft = None
    async with session.post(url + "/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for line in r.content:
            if ttft is None and line.startswith(b"data: {"):
                ttft = time.perf_counter() - t0
    if ttft is None:
        raise RuntimeError("no token streamed")
    return ttft * 1e3


async def run(url: str, workload: Workload, *, concurrency: int, oracle: bool = False,
              model: str = "tiny-chatml") -> RunResult:
    """Send the workload with `concurrency` clients (requests taken in order); oracle pins groups."""
    reqs = workload.requests()
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        before = await _get(session, url)
        ids = worker_ids(before)
        if oracle and not ids:
            raise RuntimeError("no instances listed in /metrics")
        queue = iter(reqs)
        ttfts: list[float] = []

        async def client() -> None:
            for g, prompt in queue:
                pin = ids[g % len(ids)] if oracle else None
                ttfts.append(await _one(session, url, model, prompt, workload.osl, pin))

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        after = await _get(session, url)

    def delta(name: str) -> float:
        return metric_sum(after, name) - metric_sum(before, name)

    prompt = delta("dynamo_frontend_input_sequence_tokens_sum")
    qs = statistics.quantiles(ttfts, n=100, method="inclusive")
    return RunResult(hit_rate=delta("dynamo_frontend_cached_tokens_sum") / prompt if prompt else 0.0,
                     ttft_p50_ms=statistics.median(ttfts), ttft_p99_ms=qs[98], req_s=len(reqs) / elapsed,
                     lost_decisions=delta("dynamo_component_router_overlap_lost_decisions_total"))
