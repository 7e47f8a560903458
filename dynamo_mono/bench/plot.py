"""Plots of benchmark results: latency CDFs per run and throughput vs concurrency (matplotlib, optional)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dynamo_mono.bench.stats import BenchResult

INSTALL_HINT = "--plot needs matplotlib: pip install 'dynamo-mono[bench]' (or pip install matplotlib)"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _cdf(ax, values_s: list[float], label: str) -> None:
    if not values_s:
        return
    x = np.sort(np.asarray(values_s)) * 1000.0
    ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=label)


def plot(results: Sequence[BenchResult], path: str) -> None:
    """Write a PNG with TTFT / ITL / E2E CDFs and throughput vs concurrency to path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for key, ax, title in (("ttft_s", axes[0][0], "TTFT"), ("itl_s", axes[0][1], "inter-token latency"),
                           ("e2e_s", axes[1][0], "end-to-end latency")):
        for r in results:
            _cdf(ax, getattr(r, key), f"c={r.concurrency}")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("fraction of requests" if key != "itl_s" else "fraction of gaps")
        ax.set_title(f"{title} CDF")
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax = axes[1][1]
    conc = [r.concurrency for r in results]
    ax.plot(conc, [r.req_per_s for r in results], "o-", label="req/s")
    ax.set_xlabel("concurrency")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    ax2.plot(conc, [r.output_tok_per_s for r in results], "s--", color="tab:orange", label="output tok/s")
    ax2.set_ylabel("output tokens/s")
    ax.set_title("throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
