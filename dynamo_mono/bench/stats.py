"""Summaries of request records: percentiles, throughput, errors by status, goodput against SLOs."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from dynamo_mono.bench.client import RequestRecord

PERCENTILES = (50, 90, 99)


def summarize_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/mean/max in milliseconds of values given in seconds (None when empty)."""
    if len(values_s) == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values_s, dtype=np.float64) * 1000.0
    p = np.percentile(a, PERCENTILES)
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "mean": float(a.mean()), "max": float(a.max())}


@dataclass
class BenchResult:
    """The outcome of one benchmark run (one concurrency / rate)."""

    url: str
    model: str
    api: str
    concurrency: int
    request_rate: float | None
    completed: int
    failed: int
    errors: dict[str, int]
    error_samples: list[str]
    duration_s: float
    req_per_s: float
    output_tok_per_s: float
    input_tok_per_s: float
    mean_output_tokens: float
    mean_prompt_tokens: float | None
    ttft_ms: dict[str, float | None]
    itl_ms: dict[str, float | None]
    tpot_ms: dict[str, float | None]
    e2e_ms: dict[str, float | None]
    goodput_req_per_s: float | None
    slo_ttft_ms: float | None
    slo_itl_ms: float | None
    client_cpu_ms_per_req: float
    client_cpu_util: float
    server_cpu_ms_per_req: float | None
    server_cpu_util: float | None
    # Raw samples (seconds) for plots; left out of to_dict().
    ttft_s: list[float] = field(default_factory=list, repr=False)
    e2e_s: list[float] = field(default_factory=list, repr=False)
    itl_s: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            for k in ("ttft_s", "e2e_s", "itl_s"):
                d.pop(k)
        return d


def _tpot(r: RequestRecord) -> float | None:
    if r.ttft is None or r.e2e is None or r.output_tokens < 2:
        return None
    return (r.e2e - r.ttft) / (r.output_tokens - 1)


def meets_slo(r: RequestRecord, slo_ttft_ms: float | None, slo_itl_ms: float | None) -> bool:
    """A successful request whose TTFT and mean inter-token latency are within the SLOs given."""
    if not r.ok:
        return False
    if slo_ttft_ms is not None and (r.ttft is None or r.ttft * 1000.0 > slo_ttft_ms):
        return False
    if slo_itl_ms is not None:
        t = _tpot(r)
        if t is not None and t * 1000.0 > slo_itl_ms:
            return False
    return True


def build_result(records: list[RequestRecord], *, duration_s: float, url: str, model: str, api: str,
                 concurrency: int, request_rate: float | None, slo_ttft_ms: float | None = None,
                 slo_itl_ms: float | None = None, client_cpu_s: float = 0.0,
                 server_cpu_s: float | None = None) -> BenchResult:
    """Aggregate records of one run into a BenchResult."""
    ok = [r for r in records if r.ok]
    bad = [r for r in records if not r.ok]
    errors = dict(Counter(r.status for r in bad))
    samples: list[str] = []
    for r in bad:
        if len(samples) >= 5:
            break
        msg = f"{r.status}: {r.error}"
        if msg not in samples:
            samples.append(msg)
    dur = max(duration_s, 1e-9)
    out_tokens = sum(r.output_tokens for r in ok)
    prompt_counts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    in_tokens = sum(prompt_counts) if prompt_counts else sum(r.isl for r in ok)
    ttft = [r.ttft for r in ok if r.ttft is not None]
    e2e = [r.e2e for r in ok if r.e2e is not None]
    itl = [g for r in ok for g in r.itl]
    tpot = [t for t in map(_tpot, ok) if t is not None]
    n_all = max(len(records), 1)
    goodput = None
    if slo_ttft_ms is not None or slo_itl_ms is not None:
        goodput = sum(1 for r in ok if meets_slo(r, slo_ttft_ms, slo_itl_ms)) / dur
    return BenchResult(
        url=url, model=model, api=api, concurrency=concurrency, request_rate=request_rate,
        completed=len(ok), failed=len(bad), errors=errors, error_samples=samples,
        duration_s=duration_s, req_per_s=len(ok) / dur, output_tok_per_s=out_tokens / dur,
        input_tok_per_s=in_tokens / dur,
        mean_output_tokens=out_tokens / len(ok) if ok else 0.0,
        mean_prompt_tokens=(sum(prompt_counts) / len(prompt_counts)) if prompt_counts else None,
        ttft_ms=summarize_ms(ttft), itl_ms=summarize_ms(itl), tpot_ms=summarize_ms(tpot), e2e_ms=summarize_ms(e2e),
        goodput_req_per_s=goodput, slo_ttft_ms=slo_ttft_ms, slo_itl_ms=slo_itl_ms,
        client_cpu_ms_per_req=client_cpu_s * 1000.0 / n_all, client_cpu_util=client_cpu_s / dur,
        server_cpu_ms_per_req=None if server_cpu_s is None else server_cpu_s * 1000.0 / n_all,
        server_cpu_util=None if server_cpu_s is None else server_cpu_s / dur,
        ttft_s=ttft, e2e_s=e2e, itl_s=itl,
    )
