"""Soak: N concurrent chat streams for D seconds against the mocker; errors, leaks and server RSS growth (goal < 5 %).

Measured (2-core shared dev box, client in the same box; defaults: 1000 streams, 60 s, OSL 30-90, speedup 1):
    3077 streams completed, 0 errors, ~990 in flight throughout, 43 req/s, 2.7k stream events/s;
    server RSS idle 77.9 MB, warm (15 s) 118.7 MB, end 123.3 MB: +3.9 % (goal < 5 %); idle again after
    (0 KV blocks, 0 requests); exit code 0, no error lines in the log. The growth is the prefix caches
    (mocker KV + router index) filling with the unique prompts: with `-- --num-gpu-blocks-override 3000`
    it plateaus (120.0 MB from 48 s on; +2.8 %). An earlier run: 4048 completed, 0 errors, +4.9 %.

Run: python3 tests/benchmarks/bench_soak.py [--streams 1000] [--duration 60] [--osl 30-90] [-- extra serve args]
RSS is read from /proc at three points: idle after startup, after the warm-up (first --warmup seconds under
full load: allocator pools, caches and buffers have reached their working size) and at the end of the load.
Growth is end vs warm; after the load the server must be idle again (0 KV blocks, 0 requests in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance.server import start_server  # noqa: E402
from tests.benchmarks.bench_startup import rss_mb  # noqa: E402

IDLE_GAUGES = ("dynamo_frontend_inflight_requests", "dynamo_engine_kv_active_blocks",
               "dynamo_engine_running_requests", "dynamo_engine_waiting_requests")


class Tally:
    """Counts of what the streams saw."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.tokens_events = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def one_stream(s: aiohttp.ClientSession, url: str, osl: int, tally: Tally) -> None:
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": f"soak {random.random()}"}],
            "max_tokens": osl, "ignore_eos": True, "stream": True}
    try:
        async with s.post(url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                tally.error(f"http_{r.status}")
                await r.read()
                return
            tail = b""
            events = 0
            async for chunk in r.content.iter_any():
                events += chunk.count(b"data: ")
                if b'data: {"error"' in chunk:
                    tally.error("error_event")
                    return
                tail = (tail + chunk)[-32:]
            tally.tokens_events += events
            if not tail.endswith(b"data: [DONE]\n\n"):
                tally.error("no_done")
                return
            tally.ok += 1
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        tally.error(type(exc).__name__)


async def metrics(s: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with s.get(url + "/metrics") as r:
        text = await r.text()
    out = {g: 0.0 for g in IDLE_GAUGES}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


async def soak(url: str, pid: int, streams: int, duration: float, warmup: float, osl: tuple[int, int]) -> None:
    tally = Tally()
    rss_idle = rss_mb(pid)
    stop_at = time.monotonic() + duration
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        async def worker() -> None:
            while time.monotonic() < stop_at:
                await one_stream(s, url, random.randint(*osl), tally)

        t0 = time.monotonic()
        tasks = [asyncio.create_task(worker()) for _ in range(streams)]
        await asyncio.sleep(warmup)
        rss_warm = rss_mb(pid)
        in_flight_samples, rss_samples = [], []
        while time.monotonic() < stop_at:
            in_flight_samples.append((await metrics(s, url))["dynamo_frontend_inflight_requests"])
            rss_samples.append((time.monotonic() - t0, rss_mb(pid)))
            await asyncio.sleep(2.0)
        rss_end = rss_mb(pid)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while any((idle := await metrics(s, url)).values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    rss_after = rss_mb(pid)
    total = tally.ok + sum(tally.errors.values())
    growth = (rss_end - rss_warm) / rss_warm * 100
    print(f"streams {streams}, duration {duration:.0f}s (ran {elapsed:.1f}s), osl {osl[0]}-{osl[1]}")
    print(f"requests completed: {total}  ok: {tally.ok}  errors: {sum(tally.errors.values())} {tally.errors}")
    print(f"throughput: {total / elapsed:.1f} req/s, {tally.tokens_events / elapsed:.0f} stream events/s")
    print(f"in flight (server gauge) mean {sum(in_flight_samples) / max(1, len(in_flight_samples)):.0f}, "
          f"min {min(in_flight_samples, default=0):.0f}")
    print(f"server RSS MB: idle {rss_idle:.1f}, warm {rss_warm:.1f}, end {rss_end:.1f} "
          f"(growth warm->end {growth:+.1f} %, goal < 5 %), after drain {rss_after:.1f}")
    step = max(1, len(rss_samples) // 6)
    print("server RSS timeline: " + ", ".join(f"{t:.0f}s {m:.1f}" for t, m in rss_samples[::step]))
    print(f"idle after load: {idle}  {'OK' if not any(idle.values()) else 'LEAK'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--osl", default="30-90", help="output tokens per stream, uniform in LO-HI")
    ap.add_argument("--speedup-ratio", default="1")
    ap.add_argument("extra", nargs="*", help="extra `dynamo-mono serve` arguments")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.osl.split("-"))
    srv = start_server(["--speedup-ratio", args.speedup_ratio, "--max-num-seqs", str(max(256, args.streams)),
                        "--log-level", "warning", *args.extra])
    try:
        asyncio.run(soak(srv.url, srv.proc.pid, args.streams, args.duration, args.warmup, (lo, hi)))
    finally:
        rc = srv.stop()
        errors = [l for l in srv.log().splitlines() if "ERROR" in l or "Traceback" in l]
        print(f"server exit code {rc}; error lines in server log: {len(errors)}")
        for line in errors[:5]:
            print("  " + line)


if __name__ == "__main__":
    main()
