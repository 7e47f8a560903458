"""KServe gRPC streaming (ModelStreamInfer) vs HTTP SSE (/v1/completions, stream) on one mocker server, c=16,
same run, interleaved rounds: TTFT p50 and output tokens/s side by side (both go through the same completion
request path, so the gap is the transport). Needs plugins/kserve installed.

    python tests/benchmarks/bench_grpc_vs_sse.py [--requests 128] [--max-tokens 64] [--speedup-ratio 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from conformance.server import start_server  # noqa: E402
from dynamo_mono_kserve.proto import kserve_pb2 as pb  # noqa: E402
from dynamo_mono_kserve.proto import kserve_pb2_grpc as pb_grpc  # noqa: E402

MODEL = "tiny-chatml"
PROMPT = "Tell me a long story about a lighthouse keeper."


async def sse_one(session: aiohttp.ClientSession, url: str, max_tokens: int) -> tuple[float, int]:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    ttft, deltas = None, 0
    async with session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            if orjson.loads(line[6:])["choices"][0]["text"]:
                deltas += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    return ttft or 0.0, deltas


def grpc_request(max_tokens: int) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=MODEL)
    req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    data = PROMPT.encode()
    req.raw_input_contents.append(struct.pack("<I", len(data)) + data)
    req.parameters["max_tokens"].int64_param = max_tokens
    req.parameters["ignore_eos"].bool_param = True
    return req


async def grpc_one(stub: pb_grpc.GRPCInferenceServiceStub, max_tokens: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    ttft, deltas = None, 0
    call = stub.ModelStreamInfer(iter([grpc_request(max_tokens)]))
    async for resp in call:
        assert not resp.error_message, resp.error_message
        finished = False
        for i, out in enumerate(resp.infer_response.outputs):
            raw = resp.infer_response.raw_output_contents[i]
            if out.name == "text_output" and len(raw) > 4:
                deltas += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
            elif out.name == "finish_reason":
                finished = True
        if finished:
            call.cancel()  # one request per stream: done once it finished
            break
    return ttft or 0.0, deltas


async def run(kind: str, n: int, c: int, one) -> dict:
    sem = asyncio.Semaphore(c)

    async def limited() -> tuple[float, int]:
        async with sem:
            return await one()

    t0 = time.perf_counter()
    results = await asyncio.gather(*(limited() for _ in range(n)))
    wall = time.perf_counter() - t0
    ttfts = [r[0] for r in results]
    tokens = sum(r[1] for r in results)
    return {"kind": kind, "ttft_p50_ms": statistics.median(ttfts) * 1e3, "tok_s": tokens / wall, "tokens": tokens}


async def bench(http_url: str, grpc_addr: str, args: argparse.Namespace) -> None:
    rows: dict[str, list[dict]] = {"http_sse": [], "grpc_stream": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session, \
            grpc.aio.insecure_channel(grpc_addr) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        warm = max(args.concurrency, 16)
        await run("warm", warm, args.concurrency, lambda: sse_one(session, http_url, 8))
        await run("warm", warm, args.concurrency, lambda: grpc_one(stub, 8))
        for _ in range(args.rounds):
            rows["http_sse"].append(await run("http_sse", args.requests, args.concurrency,
                                              lambda: sse_one(session, http_url, args.max_tokens)))
            rows["grpc_stream"].append(await run("grpc_stream", args.requests, args.concurrency,
                                                 lambda: grpc_one(stub, args.max_tokens)))
    print(f"{args.requests} requests x {args.rounds} rounds, c={args.concurrency}, max_tokens={args.max_tokens}, "
          f"mocker --speedup-ratio {args.speedup_ratio}")
    print(f"{'transport':14s} {'TTFT p50 (ms)':>14s} {'tokens/s':>10s}")
    summary = {}
    for kind, rs in rows.items():
        ttft = statistics.median(r["ttft_p50_ms"] for r in rs)
        tps = statistics.median(r["tok_s"] for r in rs)
        summary[kind] = (ttft, tps)
        print(f"{kind:14s} {ttft:14.2f} {tps:10.0f}   (rounds: " +
              ", ".join(f"{r['ttft_p50_ms']:.2f} ms / {r['tok_s']:.0f} tok/s" for r in rs) + ")")
    (st, sp), (gt, gp) = summary["http_sse"], summary["grpc_stream"]
    print(f"gRPC / SSE: TTFT p50 x{gt / st:.2f}, tokens/s x{gp / sp:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--speedup-ratio", type=float, default=1.0)
    args = ap.parse_args()
    ready = os.path.join(tempfile.mkdtemp(prefix="bench-grpc-"), "grpc-ready")
    srv = start_server(["--engine", "mocker", "--speedup-ratio", str(args.speedup_ratio), "--kserve-grpc-server",
                        "--grpc-port", "0", "--grpc-ready-file", ready])
    try:
        grpc_addr = open(ready).read().strip()
        asyncio.run(bench(srv.url, grpc_addr, args))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
