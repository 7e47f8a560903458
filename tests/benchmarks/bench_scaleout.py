"""Scale-out benchmark: remote-worker vs in-process req/s, and KV transfer bandwidth over tcp vs nixl.

Run: python3 tests/benchmarks/bench_scaleout.py [--requests 640] [--concurrency 64] [--skip-serving]
     [--sizes-mib 1,4,16,64,256]
Serving: one mocker instance with --speedup-ratio 0 (engine time ~0), in the server process vs in one
worker process behind `serve --num-instances 0`; prints req/s of each and remote/in-process.
Transfer: a child process publishes N-MiB buffers, this process fetches them; prints GB/s per size.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tests.worker.harness import remote_instances, start_server, start_worker, wait_until  # noqa: E402

MiB = 1 << 20


async def _load(url: str, n: int, c: int) -> float:
    body = {"model": "tiny-chatml", "prompt": "benchmark prompt with a few words", "max_tokens": 32,
            "ignore_eos": True}
    async def client(http: aiohttp.ClientSession, todo) -> None:
        for _ in todo:
            async with http.post(url + "/v1/completions", json=body) as r:
                assert r.status == 200, await r.text()
                await r.read()

    conn = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=conn) as http:
        warm = iter(range(2 * c))
        await asyncio.gather(*(client(http, warm) for _ in range(c)))  # open the connections
        todo = iter(range(n))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http, todo) for _ in range(c)))
        return n / (time.perf_counter() - t0)


def bench_serving(n: int, c: int) -> None:
    args = ["--speedup-ratio", "0"]
    local = start_server(["--num-instances", "1", *args], token=None)
    try:
        rps_local = asyncio.run(_load(local.url, n, c))
    finally:
        local.stop()
    server = start_server(["--num-instances", "0"])
    worker = start_worker(server.url, args)
    try:
        wait_until(lambda: remote_instances(server.url), 60, "the worker to join")
        rps_remote = asyncio.run(_load(server.url, n, c))
    finally:
        worker.stop(signal.SIGKILL)
        server.stop()
    print(f"serving c={c} n={n} max_tokens=32 speedup 0: in-process {rps_local:8.1f} req/s   "
          f"remote worker {rps_remote:8.1f} req/s   remote/in-process {rps_remote / rps_local:.2f}")


_OWNER = r"""
import asyncio, sys
import msgspec
from dynamo_mono.plugins import get_plugins
from dynamo_mono.transports.kv import create_kv_transport

async def main():
    t = create_kv_transport(get_plugins(), sys.argv[1])
    ep = await t.start()
    print(msgspec.json.encode(ep).decode(), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        key, size = line.decode().split()
        t.publish(key, bytearray(int(size)))
        print("ok", flush=True)
    await t.stop()

asyncio.run(main())
"""


async def _transfer(name: str, sizes: list[int], reps: int) -> list[tuple[int, float]]:
    import msgspec

    from dynamo_mono.engine import KvEndpoint
    from dynamo_mono.plugins import get_plugins
    from dynamo_mono.transports.kv import create_kv_transport

    owner = await asyncio.create_subprocess_exec(sys.executable, "-c", _OWNER, name, stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE)
    endpoint = msgspec.json.decode(await owner.stdout.readline(), type=KvEndpoint)
    me = create_kv_transport(get_plugins(), name)
    await me.start()
    out = []
    try:
        for size in sizes:
            best = 0.0
            for r in range(reps if size <= 64 * MiB else 2):
                key = f"{size}-{r}"
                owner.stdin.write(f"{key} {size}\n".encode())
                await owner.stdin.drain()
                assert (await owner.stdout.readline()).strip() == b"ok"
                t0 = time.perf_counter()
                buf = await me.fetch(endpoint, key, size)
                dt = time.perf_counter() - t0
                assert len(buf) == size
                best = max(best, size / dt / 1e9)
            out.append((size, best))
    finally:
        await me.stop()
        owner.stdin.close()
        await owner.wait()
    return out


def bench_transfer(sizes: list[int], reps: int) -> None:
    names = ["tcp"] + (["nixl"] if importlib.util.find_spec("nixl") else [])
    results = {n: dict(asyncio.run(_transfer(n, sizes, reps))) for n in names}
    print("KV transfer between processes, best of runs (GB/s):")
    print("   size  " + "  ".join(f"{n:>8s}" for n in names))
    for s in sizes:
        print(f"{s // MiB:4d} MiB  " + "  ".join(f"{results[n][s]:8.2f}" for n in names))
    if "nixl" not in names:
        print("nixl not installed: pip install nixl-cu12==1.5.1 && pip install --no-deps nixl==1.5.1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--sizes-mib", default="1,4,16,64,256")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--skip-transfer", action="store_true")
    a = ap.parse_args()
    if not a.skip_serving:
        bench_serving(a.requests, a.concurrency)
    if not a.skip_transfer:
        bench_transfer([int(x) * MiB for x in a.sizes_mib.split(",")], a.reps)


if __name__ == "__main__":
    main()
