"""The HTTP floor of this machine next to dynamo-mono: how much of TTFT and CPU per request is the server's own.

The floor is an aiohttp + uvloop server that does nothing but answer a chat request with pre-built SSE chunks, one
per event-loop turn (no template, tokenizer, router or engine). Both servers get the same `dynamo-mono bench`
workload as bench_vs_dynamo.py (streaming chat, ISL 512, OSL 64, ignore_eos), pinned to CPU 0 with the client on
CPU 1, at concurrency 1 and 64.

    python3 tests/benchmarks/bench_floor.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dynamo_mono.assets import TINY_CHATML_DIR  # noqa: E402
from dynamo_mono.bench import BenchConfig, Dist, arun_benchmark  # noqa: E402
from dynamo_mono.bench.workload import WordPool  # noqa: E402

MODEL = "tiny-chatml"


def serve_floor(ready_file: str) -> None:
    """The floor server: parse the JSON body, then stream max_tokens constant content events."""
    import orjson
    import uvloop
    from aiohttp import web

    pre = (b'data: {"id":"chatcmpl-0","object":"chat.completion.chunk","created":0,"model":"' + MODEL.encode()
           + b'","choices":[{"index":0,"delta":{"content":')
    post = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        n = int(body.get("max_tokens") or 16)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        tr = request.transport
        for _ in range(n):
            await asyncio.sleep(0)  # one engine step per loop turn, as the mocker at --speedup-ratio 0
            data = pre + orjson.dumps(" tok") + post
            tr.write(b"%x\r\n%b\r\n" % (len(data), data))
        await resp.write(b'data: {"id":"chatcmpl-0","object":"chat.completion.chunk","choices":[{"index":0,'
                         b'"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":512,"completion_tokens":'
                         + str(n).encode() + b'}}\n\ndata: [DONE]\n\n')
        return resp

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        Path(ready_file).write_text(f"127.0.0.1:{port}")
        await asyncio.Event().wait()

    uvloop.run(main())


def start(cmd: list[str], ready: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{cmd[:4]} did not start")
        time.sleep(0.05)
    return proc, "http://" + ready.read_text().strip()


async def measure(url: str, pid: int, pool: WordPool, requests: int) -> dict:
    out = {}
    for c, n in ((1, max(50, requests // 8)), (64, requests)):
        cfg = BenchConfig(url=url, model=MODEL, api="chat", stream=True, concurrency=c, num_requests=n,
                          warmup=min(64, n), isl=Dist("fixed", 512), osl=Dist("fixed", 64), server_pids=[pid])
        r = await arun_benchmark(cfg, pool=pool)
        if r.failed:
            raise RuntimeError(f"{url} c={c}: {r.failed} failed: {r.error_samples}")
        out[c] = r
    return out


async def main_async(args: argparse.Namespace) -> None:
    os.sched_setaffinity(0, {1})
    pool = WordPool(str(TINY_CHATML_DIR))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        servers = {
            "floor": [sys.executable, __file__, "--serve", f"{tmp}/floor.ready"],
            "dynamo-mono": [sys.executable, "-m", "dynamo_mono.cli", "serve", "--model", str(TINY_CHATML_DIR),
                            "--served-model-name", MODEL, "--speedup-ratio", "0", "--port", "0", "--ready-file",
                            f"{tmp}/mono.ready", "--no-anthropic-api", "--log-level", "warning"],
        }
        for name, cmd in servers.items():
            proc, url = start(cmd, Path(cmd[-1] if name == "floor" else f"{tmp}/mono.ready"))
            try:
                results[name] = await measure(url, proc.pid, pool, args.requests)
            finally:
                proc.terminate()
                proc.wait(10)
    f, m = results["floor"], results["dynamo-mono"]
    print("streaming chat, ISL 512, OSL 64; server on CPU 0, client on CPU 1")
    print(f"{'':36s} {'floor':>10s} {'dynamo-mono':>12s} {'ours minus floor':>17s}")
    for label, key, c in (("TTFT p50 ms, c=1", "ttft_ms", 1), ("E2E p50 ms, c=1", "e2e_ms", 1)):
        a, b = getattr(f[c], key)["p50"], getattr(m[c], key)["p50"]
        print(f"{label:36s} {a:10.2f} {b:12.2f} {b - a:17.2f}")
    for c in (1, 64):
        a, b = f[c].server_cpu_ms_per_req, m[c].server_cpu_ms_per_req
        print(f"{'server CPU ms/request, c=' + str(c):36s} {a:10.2f} {b:12.2f} {b - a:17.2f}")
    print(f"{'req/s, c=64':36s} {f[64].req_per_s:10.1f} {m[64].req_per_s:12.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests of the c=64 run")
    ap.add_argument("--serve", metavar="READY_FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_floor(args.serve)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
