"""Runs a benchmark: closed loop (fixed concurrency) or open loop (Poisson or trace arrivals, concurrency cap)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
import time
from typing import Iterator

import aiohttp

from dynamo_mono.bench import procstat
from dynamo_mono.bench.client import RequestRecord, send
from dynamo_mono.bench.config import BenchConfig, BenchConfigError
from dynamo_mono.bench.stats import BenchResult, build_result
from dynamo_mono.bench.workload import Prompt, WordPool, generate, take

_PREBUILD_LIMIT = 200_000  # prompts built before the clock starts when --num-requests is given


def _endpoint(config: BenchConfig) -> str:
    base = config.url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + ("/chat/completions" if config.api == "chat" else "/completions")


def _headers(config: BenchConfig) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if config.api_key:
        h["Authorization"] = f"Bearer {config.api_key}"
    return h


async def first_model(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    """The id of the first model listed by GET /v1/models."""
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    async with session.get(base + "/models", headers=headers) as resp:
        if resp.status != 200:
            raise BenchConfigError(f"GET {base}/models answered {resp.status}: pass --model")
        data = await resp.json(content_type=None)
    models = data.get("data") or []
    if not models:
        raise BenchConfigError(f"{base}/models lists no model: pass --model")
    return str(models[0]["id"])


class _Progress:
    """tqdm bar on stderr when asked for; a no-op otherwise."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req", file=sys.stderr, leave=False, smoothing=0.1)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _session(config: BenchConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


async def _closed_loop(session: aiohttp.ClientSession, url: str, headers: dict, stream: bool,
                       prompts: Iterator[Prompt], concurrency: int, limit: int | None,
                       deadline: float | None, on_done) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    started = 0

    async def worker() -> None:
        nonlocal started
        while (limit is None or started < limit) and (deadline is None or time.perf_counter() < deadline):
            p = next(prompts, None)
            if p is None:
                return
            started += 1
            records.append(await send(session, url, p.body, headers, stream, p.isl, p.osl))
            on_done()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


async def _open_loop(session: aiohttp.ClientSession, url: str, headers: dict, stream: bool,
                     prompts: Iterator[Prompt], rate: float | None, cap: int, limit: int | None,
                     deadline: float | None, seed: int, on_done) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    sem = asyncio.Semaphore(cap)
    rng = random.Random(seed ^ 0x5A17)
    tasks: set[asyncio.Task] = set()
    t0 = time.perf_counter()
    next_at = t0

    async def one(p: Prompt) -> None:
        try:
            records.append(await send(session, url, p.body, headers, stream, p.isl, p.osl))
            on_done()
        finally:
            sem.release()

    n = 0
    for p in prompts:
        if limit is not None and n >= limit:
            break
        if rate is not None:
            next_at += rng.expovariate(rate)
        elif p.at_s is not None:
            next_at = t0 + p.at_s
        if deadline is not None and next_at >= deadline:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await sem.acquire()
        t = asyncio.ensure_future(one(p))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks)
    return records


async def arun_benchmark(config: BenchConfig, *, pool: WordPool | None = None) -> BenchResult:
    """Run one benchmark as described by config and return its summary (async form)."""
    config.validate()
    url = _endpoint(config)
    headers = _headers(config)
    pool = pool or WordPool(config.tokenizer)
    async with _session(config) as session:
        model = config.model or await first_model(session, config.url, headers)
        prompts = generate(config, pool, model)
        trace = config.workload.startswith("trace:")
        limit = config.num_requests
        if config.warmup:
            await _closed_loop(session, url, headers, config.stream, iter(take(prompts, config.warmup)),
                               config.concurrency, config.warmup, None, lambda: None)
            if trace:  # replay the trace from its start after warming up on its head
                prompts = generate(config, pool, model)
        if limit is not None and config.duration_s is None and limit <= _PREBUILD_LIMIT:
            prompts = iter(take(prompts, limit))
        label = f"c={config.concurrency}" + (f" rate={config.request_rate:g}/s" if config.request_rate else "")
        bar = _Progress(config.progress, limit if config.duration_s is None else None, label)
        cpu0 = procstat.self_cpu_seconds()
        srv0 = procstat.cpu_seconds(config.server_pids) if config.server_pids else None
        t0 = time.perf_counter()
        deadline = t0 + config.duration_s if config.duration_s else None
        try:
            if config.request_rate is None and not trace:
                records = await _closed_loop(session, url, headers, config.stream, prompts, config.concurrency,
                                             limit, deadline, bar.update)
            else:
                records = await _open_loop(session, url, headers, config.stream, prompts, config.request_rate,
                                           config.concurrency, limit, deadline, config.seed, bar.update)
        finally:
            bar.close()
        duration = time.perf_counter() - t0
        client_cpu = procstat.self_cpu_seconds() - cpu0
        server_cpu = procstat.cpu_seconds(config.server_pids) - srv0 if srv0 is not None else None
    return build_result(records, duration_s=duration, url=config.url, model=model, api=config.api,
                        concurrency=config.concurrency, request_rate=config.request_rate,
                        slo_ttft_ms=config.slo_ttft_ms, slo_itl_ms=config.slo_itl_ms,
                        client_cpu_s=client_cpu, server_cpu_s=server_cpu)


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Run one benchmark as described by config and return its summary (starts its own event loop)."""
    from dynamo_mono.uvloop_setup import run

    return run(arun_benchmark(config))


async def arun_sweep(config: BenchConfig, concurrencies: list[int]) -> list[BenchResult]:
    """The same benchmark at each concurrency in turn (prompt pool built once)."""
    pool = WordPool(config.tokenizer)
    return [await arun_benchmark(dataclasses.replace(config, concurrency=c), pool=pool) for c in concurrencies]


def run_sweep(config: BenchConfig, concurrencies: list[int]) -> list[BenchResult]:
    """Synchronous form of arun_sweep."""
    from dynamo_mono.uvloop_setup import run

    return run(arun_sweep(config, concurrencies))
