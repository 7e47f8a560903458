"""DIR/profile.png: prefill TTFT and throughput per prompt length, decode ITL and throughput per active KV tokens
(one line per context length)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynamo_mono.profiler.data import Profile

INSTALL_HINT = "the profile plot needs matplotlib: pip install 'dynamo-mono[bench]' (or --no-plot)"


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_profile(profile: Profile, path: str | Path, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    pf, dc = profile.prefill, profile.decode
    fig, ((a, b), (c, d)) = plt.subplots(2, 2, figsize=(12, 8.5))
    order = np.argsort(pf.isl)
    a.plot(pf.isl[order], pf.ttft_ms[order], "o-")
    a.set(xlabel="prompt tokens (ISL)", ylabel="TTFT (ms)", title="prefill: TTFT")
    b.plot(pf.isl[order], pf.thpt_per_instance[order], "o-", color="tab:green")
    b.set(xlabel="prompt tokens (ISL)", ylabel="prompt tokens / s / instance", title="prefill: throughput")
    kv = dc.active_kv_tokens
    for ctx in np.unique(dc.context_length):
        sel = np.isclose(dc.context_length, ctx)
        o = np.argsort(kv[sel])
        c.plot(kv[sel][o], dc.itl_ms[sel][o], "o-", label=f"context {int(ctx)}")
        d.plot(kv[sel][o], dc.thpt_per_instance[sel][o], "o-", label=f"context {int(ctx)}")
    c.set(xlabel=f"active KV tokens (of {dc.max_kv_tokens})", ylabel="ITL (ms)", title="decode: ITL")
    d.set(xlabel=f"active KV tokens (of {dc.max_kv_tokens})", ylabel="output tokens / s / instance",
          title="decode: throughput")
    for ax in (a, b, c, d):
        ax.grid(alpha=0.3)
    c.legend(fontsize=8)
    d.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
