"""Human-readable summary table and JSON output of benchmark results."""

from __future__ import annotations

from typing import Sequence

import orjson

from dynamo_mono.bench.stats import BenchResult


def _f(v: float | None, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _pct(d: dict) -> str:
    return f"{_f(d['p50'])} / {_f(d['p90'])} / {_f(d['p99'])}"


def table(results: Sequence[BenchResult]) -> str:
    """One column per run: throughput, latency percentiles (p50 / p90 / p99 ms), errors, CPU."""
    rows: list[tuple[str, list[str]]] = [
        ("concurrency", [str(r.concurrency) for r in results]),
        ("request rate (req/s)", [_f(r.request_rate) if r.request_rate else "closed loop" for r in results]),
        ("completed / failed", [f"{r.completed} / {r.failed}" for r in results]),
        ("duration (s)", [_f(r.duration_s) for r in results]),
        ("throughput (req/s)", [_f(r.req_per_s) for r in results]),
        ("output tokens/s", [_f(r.output_tok_per_s, 1) for r in results]),
        ("input tokens/s", [_f(r.input_tok_per_s, 1) for r in results]),
        ("mean prompt / output tok", [f"{_f(r.mean_prompt_tokens, 1)} / {_f(r.mean_output_tokens, 1)}" for r in results]),
        ("TTFT ms p50/p90/p99", [_pct(r.ttft_ms) for r in results]),
        ("ITL ms p50/p90/p99", [_pct(r.itl_ms) for r in results]),
        ("TPOT ms p50/p90/p99", [_pct(r.tpot_ms) for r in results]),
        ("E2E ms p50/p90/p99", [_pct(r.e2e_ms) for r in results]),
    ]
    if any(r.goodput_req_per_s is not None for r in results):
        rows.append(("goodput (req/s in SLO)", [_f(r.goodput_req_per_s) for r in results]))
    rows.append(("client CPU ms/req (util)", [f"{_f(r.client_cpu_ms_per_req, 3)} ({r.client_cpu_util:.0%})" for r in results]))
    if any(r.server_cpu_ms_per_req is not None for r in results):
        rows.append(("server CPU ms/req (util)",
                     [f"{_f(r.server_cpu_ms_per_req, 3)} ({_f((r.server_cpu_util or 0) * 100, 0)}%)" for r in results]))
    errs = sorted({k for r in results for k in r.errors})
    for k in errs:
        rows.append((f"errors {k}", [str(r.errors.get(k, 0)) for r in results]))
    w0 = max(len(name) for name, _ in rows)
    widths = [max(len(vals[i]) for _, vals in rows) for i in range(len(results))]
    lines = []
    for name, vals in rows:
        lines.append(name.ljust(w0) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths)))
    for r in results:
        for s in r.error_samples:
            lines.append(f"c={r.concurrency} error sample: {s}")
    return "\n".join(lines)


def write_json(path: str, results: Sequence[BenchResult], samples: bool = False) -> None:
    """Write {"results": [...]} with one summary dict per run (raw samples if asked)."""
    with open(path, "wb") as f:
        f.write(orjson.dumps({"results": [r.to_dict(samples) for r in results]}, option=orjson.OPT_INDENT_2))
