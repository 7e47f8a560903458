"""Aggregation of request records: percentiles, errors by status, goodput."""

from dynamo_mono.bench.client import RequestRecord
from dynamo_mono.bench.stats import build_result, meets_slo, summarize_ms


def _ok(ttft: float, e2e: float, out: int = 11) -> RequestRecord:
    return RequestRecord(0.0, 10, out, ok=True, status="200", ttft=ttft, e2e=e2e, output_tokens=out,
                         itl=[(e2e - ttft) / (out - 1)] * (out - 1))


def test_summarize_ms_percentiles():
    s = summarize_ms([i / 1000 for i in range(1, 101)])
    assert round(s["p50"], 1) == 50.5 and 90 <= s["p90"] <= 91 and 99 <= s["p99"] <= 100 and s["max"] == 100
    assert summarize_ms([])["p50"] is None


def test_build_result_counts_errors_and_goodput():
    recs = [_ok(0.010, 0.110), _ok(0.050, 0.150), _ok(0.010, 1.010)]
    recs.append(RequestRecord(0.0, 10, 11, status="429", error="busy", e2e=0.001))
    r = build_result(recs, duration_s=2.0, url="u", model="m", api="chat", concurrency=4, request_rate=None,
                     slo_ttft_ms=20, slo_itl_ms=20, client_cpu_s=0.004, server_cpu_s=0.008)
    assert (r.completed, r.failed, r.errors) == (3, 1, {"429": 1})
    assert r.req_per_s == 1.5 and r.output_tok_per_s == 33 / 2.0
    assert r.goodput_req_per_s == 0.5  # only the first meets TTFT <= 20 ms and TPOT <= 20 ms
    assert r.server_cpu_ms_per_req == 2.0 and r.client_cpu_ms_per_req == 1.0
    assert r.error_samples == ["429: busy"]
    assert "ttft_s" not in r.to_dict() and r.to_dict(samples=True)["ttft_s"]


def test_failed_request_never_meets_slo():
    assert not meets_slo(RequestRecord(0.0, 1, 1, ttft=0.001, e2e=0.001), None, None)
    assert meets_slo(_ok(0.001, 0.002), None, None)


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    import sys

    import pytest

    from dynamo_mono.bench.plot import PlotUnavailable, plot

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = build_result([_ok(0.01, 0.1)], duration_s=1.0, url="u", model="m", api="chat", concurrency=1, request_rate=None)
    with pytest.raises(PlotUnavailable, match="pip install"):
        plot([r], str(tmp_path / "x.png"))


def test_plot_writes_png(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    from dynamo_mono.bench.plot import plot

    rs = [build_result([_ok(0.01 * c, 0.1 * c) for _ in range(5)], duration_s=1.0, url="u", model="m", api="chat",
                       concurrency=c, request_rate=None) for c in (1, 4)]
    out = tmp_path / "p.png"
    plot(rs, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
