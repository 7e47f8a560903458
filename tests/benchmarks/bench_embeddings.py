"""Embeddings/s for 1000 short inputs: through the server (HTTP /v1/embeddings, batched requests) vs the engine
called directly in-process (the same engine, built from the same options by the server's own launch code).

The direct figures are the ceiling: `engine.embed()` on pre-tokenized inputs in batches of --embedding-batch-size,
all batches at once (what the server does with one request), and the same with the tokenization included. The
server figures send the 1000 inputs as requests of 1, 10, 100 and 1000 inputs (float, and base64 for the larger
ones) from an aiohttp client at a fixed concurrency. Best of --repeat runs each; ratios to the direct figure.

    python3 tests/benchmarks/bench_embeddings.py [--speedup-ratio 0] [--batch-size 64]
    python3 tests/benchmarks/bench_embeddings.py --engine vllm --model DIR   # a pooling model (tiny Llama: --tiny)

(An uninstalled checkout of the vLLM plugin: PYTHONPATH=plugins/vllm.)
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

N_INPUTS = 1000
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu cat dog sun moon river stone "
         "market bread orbit signal").split()
# (inputs per request, concurrent requests, encoding_format)
SHAPES = [(1, 32, "float"), (10, 8, "float"), (100, 4, "float"), (100, 4, "base64"), (1000, 1, "float"),
          (1000, 1, "base64")]


def short_inputs(n: int = N_INPUTS, seed: int = 0) -> list[str]:
    """n short texts of 4-12 words, the same every run."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of both paths: resolved in-process, and as `serve` arguments (cli_args) for the server."""
    opts: dict[str, Any] = {"engine": args.engine, "model_kind": "embedding", "served_model_name": "emb",
                            "embedding_batch_size": args.batch_size, "log_level": "warning"}
    if args.engine == "mocker":
        opts["speedup_ratio"] = args.speedup_ratio
    else:
        opts.update(model=args.model, dtype="float32", enforce_eager=True, block_size=32, max_model_len=512,
                    num_gpu_blocks_override=64)
    return opts


def cli_args(opts: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in opts.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is not False and v is not None:
            out += [flag, str(v)]
    return out


async def direct(opts: dict[str, Any], texts: list[str], repeat: int) -> dict[str, float]:
    """embeddings/s of engine.embed() in-process: pre-tokenized, and tokenization included."""
    from dynamo_mono.cli import serve_options
    from dynamo_mono.config import resolve
    from dynamo_mono.engine import EmbeddingRequest
    from dynamo_mono.plugins import get_plugins
    from dynamo_mono.server import build_state, stop_engines

    plugins = get_plugins()
    state = await build_state(resolve(serve_options(plugins, opts["engine"]), opts, env={}), plugins)
    try:
        model = state.models["emb"]
        engine = next(iter(model.pool.instances.values())).engine
        tok = model.tokenizer
        size = opts["embedding_batch_size"]

        async def run(token_lists: list[list[int]], tag: str) -> None:
            batches = [token_lists[i:i + size] for i in range(0, len(token_lists), size)]
            outs = await asyncio.gather(*(engine.embed(EmbeddingRequest(f"{tag}-{k}", b))
                                          for k, b in enumerate(batches)))
            assert sum(o.embeddings.shape[0] for o in outs) == len(token_lists)

        ids = [tok.encode(t) for t in texts]
        await run(ids, "warm")
        best_engine = best_tok = 0.0
        for r in range(repeat):
            t0 = time.perf_counter()
            await run(ids, f"e{r}")
            best_engine = max(best_engine, len(ids) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            await run([tok.encode(t) for t in texts], f"t{r}")
            best_tok = max(best_tok, len(ids) / (time.perf_counter() - t0))
        return {"engine only": best_engine, "tokenize + engine": best_tok, "tokens": sum(map(len, ids))}
    finally:
        await stop_engines(state)


async def through_server(url: str, texts: list[str], repeat: int) -> list[tuple[str, float]]:
    import aiohttp
    import orjson

    results = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def post(chunk: list[str], fmt: str, check: bool = False) -> None:
            body = orjson.dumps({"model": "emb", "input": chunk, "encoding_format": fmt})
            async with http.post(url + "/v1/embeddings", data=body,
                                 headers={"Content-Type": "application/json"}) as r:
                raw = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {raw[:300]!r}")
                if check:
                    assert len(orjson.loads(raw)["data"]) == len(chunk)

        async def run(per_request: int, concurrency: int, fmt: str, check: bool = False) -> float:
            chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
            sem = asyncio.Semaphore(concurrency)

            async def one(c: list[str]) -> None:
                async with sem:
                    await post(c, fmt, check)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(c) for c in chunks))
            return len(texts) / (time.perf_counter() - t0)

        for per_request, concurrency, fmt in SHAPES:
            await run(per_request, concurrency, fmt, check=True)  # warm-up, and the answers are complete
            best = max([await run(per_request, concurrency, fmt) for _ in range(repeat)])
            results.append((f"HTTP {per_request:>4} input(s)/request, c={concurrency:<2} {fmt:6s}", best))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="mocker", choices=("mocker", "vllm"))
    ap.add_argument("--model", help="vllm: the pooling model directory")
    ap.add_argument("--tiny", action="store_true", help="vllm: build and use the tiny random Llama (needs torch)")
    ap.add_argument("--speedup-ratio", type=float, default=0.0,
                    help="mocker: 0 = no simulated step time (measures the serving overhead)")
    ap.add_argument("--batch-size", type=int, default=64, help="--embedding-batch-size of both paths")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.engine == "vllm":
        import os

        from tests.vllm.conftest import VLLM_ENV

        os.environ.update(VLLM_ENV)  # CPU settings, for the in-process engine and the server alike
    if args.engine == "vllm" and not args.model:
        if not args.tiny:
            ap.error("--engine vllm needs --model DIR (or --tiny)")
        import tempfile

        from dynamo_mono_vllm.tiny_model import build_tiny_llama

        args.model = str(build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-embed-v1",
                                          matryoshka=True))
    texts = short_inputs()
    opts = engine_options(args)

    d = asyncio.run(direct(opts, texts, args.repeat))
    from conformance.server import start_server

    srv = start_server(cli_args(opts), timeout=300)
    try:
        http = asyncio.run(through_server(srv.url, texts, args.repeat))
    finally:
        srv.stop(timeout=30)
    ref = d["engine only"]
    label = f"{args.engine}" + (f", speedup {args.speedup_ratio:g}" if args.engine == "mocker" else "")
    print(f"\nembeddings/s, {N_INPUTS} short inputs ({d['tokens'] / N_INPUTS:.1f} tokens each), {label}, "
          f"engine batches of {args.batch_size}; best of {args.repeat}")
    print(f"  {'direct engine.embed(), pre-tokenized':48s} {ref:10.0f}   1.00")
    print(f"  {'direct tokenize + engine.embed()':48s} {d['tokenize + engine']:10.0f}   "
          f"{d['tokenize + engine'] / ref:.2f}")
    for name, rate in http:
        print(f"  {name:48s} {rate:10.0f}   {rate / ref:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
