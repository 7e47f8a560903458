"""Built-in plugin adding the `dynamo-mono bench` subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dynamo_mono.hookspecs import hookimpl


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrencies must be integers >= 1")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench flags (also used by tests/benchmarks scripts)."""
    g = p.add_argument_group("target")
    g.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL; http:// is assumed when no scheme is given (default %(default)s)")
    g.add_argument("--model", help="model name (default: the first of GET /v1/models)")
    g.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    g.add_argument("--api", choices=("chat", "completions", "completions-tokens"), default="chat",
                   help="chat: /v1/chat/completions; completions: text prompt; completions-tokens: token-id prompt")
    g.add_argument("--no-stream", dest="stream", action="store_false", help="unary requests (TTFT = E2E)")
    g = p.add_argument_group("load")
    g.add_argument("--concurrency", type=int, default=1, help="closed loop: requests in flight; open loop: cap")
    g.add_argument("--request-rate", type=float, help="open loop: Poisson arrivals at this many req/s")
    g.add_argument("--num-requests", type=int, help="requests to send (default 100 unless --duration)")
    g.add_argument("--duration", type=float, help="seconds to keep sending (in-flight requests still finish)")
    g.add_argument("--warmup", type=int, default=0, help="requests sent first and not counted")
    g.add_argument("--sweep", type=_concurrencies, help="run once per concurrency, e.g. 1,8,32,64")
    g = p.add_argument_group("workload")
    g.add_argument("--isl", default="512", help="prompt tokens: N (default 512)")
    g.add_argument("--osl", default="64", help="output tokens (max_tokens): N (default 64)")
    g.add_argument("--isl-dist", help="prompt length distribution: normal:MEAN:STD or uniform:LO:HI (overrides --isl)")
    g.add_argument("--osl-dist", help="output length distribution (overrides --osl)")
    g.add_argument("--ignore-eos", dest="ignore_eos", action="store_true", default=None,
                   help="force exactly max_tokens output tokens (default: on for a fixed OSL)")
    g.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false")
    g.add_argument("--eos-field", choices=("top", "nvext", "both"), default="top",
                   help="where ignore_eos is sent: top-level (default; vLLM, SGLang, Dynamo 1.6.1 and dynamo-mono "
                        "take it), nvext.ignore_eos (Dynamo 1.6.1 rejects it with 400), or both")
    g.add_argument("--workload", default="random", help="random | shared-prefix | prefix-groups | trace:FILE (mooncake JSONL)")
    g.add_argument("--prefix-len", type=int, default=256, help="shared-prefix / prefix-groups: shared prefix tokens")
    g.add_argument("--num-groups", type=int, default=8, help="prefix-groups: number of distinct prefixes")
    g.add_argument("--trace-time-scale", type=float, default=1.0, help="trace: scale timestamps (0.5 = twice as fast)")
    g.add_argument("--tokenizer", help="model directory whose tokenizer sizes prompts (default: embedded tiny ChatML)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("report")
    g.add_argument("--slo-ttft", type=float, help="goodput SLO: TTFT in ms")
    g.add_argument("--slo-itl", type=float, help="goodput SLO: mean inter-token latency in ms")
    g.add_argument("--server-pid", type=int, action="append", default=[],
                   help="charge this process's CPU (and its children's) per request; repeatable")
    g.add_argument("--json", help="write the results as JSON to this file")
    g.add_argument("--json-samples", action="store_true", help="include raw per-request latencies in --json")
    g.add_argument("--plot", help="write latency CDFs and throughput vs concurrency to this PNG (needs matplotlib)")
    g.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> Any:
    """BenchConfig from parsed bench flags; BenchConfigError for bad values."""
    from dynamo_mono.bench.config import BenchConfig, parse_dist

    num = args.num_requests if args.num_requests is not None else (None if args.duration else 100)
    return BenchConfig(
        url=args.url if "://" in args.url else "http://" + args.url, model=args.model, api_key=args.api_key, api=args.api, stream=args.stream,
        concurrency=args.concurrency, request_rate=args.request_rate, num_requests=num,
        duration_s=args.duration, warmup=args.warmup,
        isl=parse_dist(args.isl_dist or args.isl, "--isl-dist" if args.isl_dist else "--isl"),
        osl=parse_dist(args.osl_dist or args.osl, "--osl-dist" if args.osl_dist else "--osl"),
        ignore_eos=args.ignore_eos, eos_field=args.eos_field, workload=args.workload,
        prefix_len=args.prefix_len, num_groups=args.num_groups, trace_time_scale=args.trace_time_scale,
        tokenizer=args.tokenizer, slo_ttft_ms=args.slo_ttft, slo_itl_ms=args.slo_itl,
        server_pids=list(args.server_pid), seed=args.seed, timeout_s=args.timeout,
        progress=args.progress and sys.stderr.isatty(),
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark (or sweep), print the table, write JSON / plot if asked."""
    from dynamo_mono.bench.config import BenchConfigError
    from dynamo_mono.bench.report import table, write_json
    from dynamo_mono.bench.runner import run_sweep

    try:
        config = config_from_args(args)
        config.validate()
        if args.plot:
            import importlib.util

            if importlib.util.find_spec("matplotlib") is None:
                from dynamo_mono.bench.plot import INSTALL_HINT

                raise BenchConfigError(INSTALL_HINT)
        results = run_sweep(config, args.sweep or [config.concurrency])
    except BenchConfigError as exc:
        print(f"dynamo-mono bench: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # unreachable server, unreadable trace / tokenizer
        print(f"dynamo-mono bench: error: {exc}", file=sys.stderr)
        return 1
    print(table(results))
    if args.json:
        write_json(args.json, results, samples=args.json_samples)
    if args.plot:
        from dynamo_mono.bench.plot import plot

        plot(results, args.plot)
    return 0 if all(r.completed for r in results) else 1


@hookimpl
def register_cli(parser: Any) -> None:
    """Add `bench` to the dynamo-mono subcommands."""
    p = parser.add_parser("bench", help="load-test an OpenAI-compatible server (throughput, TTFT, ITL, goodput)",
                          description="Benchmark any OpenAI-compatible server: closed or open loop, latency "
                                      "percentiles, goodput, server and client CPU per request.")
    add_arguments(p)
    p.set_defaults(handler=cmd_bench)
