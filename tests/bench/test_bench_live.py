"""`dynamo-mono bench` against a real `dynamo-mono serve --speedup-ratio 0` subprocess on an ephemeral port."""

import json
import os
import subprocess
import sys
import time

import pytest

from dynamo_mono.bench import BenchConfig, Dist, run_benchmark


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ready = tmp_path_factory.mktemp("srv") / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "dynamo_mono.cli", "serve", "--speedup-ratio", "0", "--port", "0",
                             "--ready-file", str(ready), "--no-anthropic-api", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (ready.exists() and ready.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    yield proc, "http://" + ready.read_text().strip()
    proc.terminate()
    proc.wait(10)


@pytest.mark.timeout(15)
def test_closed_loop_counts_and_percentiles(server):
    proc, url = server
    r = run_benchmark(BenchConfig(url=url, concurrency=4, num_requests=20, isl=Dist("fixed", 128),
                                  osl=Dist("fixed", 16), server_pids=[proc.pid], slo_ttft_ms=10_000))
    assert (r.completed, r.failed) == (20, 0) and r.model == "tiny-chatml"
    assert r.mean_output_tokens == 16 and r.mean_prompt_tokens == 128  # server's own usage counts
    assert 0 < r.ttft_ms["p50"] <= r.ttft_ms["p90"] <= r.ttft_ms["p99"] <= r.e2e_ms["max"]
    assert r.e2e_ms["p50"] >= r.ttft_ms["p50"]
    # One gap per text chunk after the first: at most one per token after the first. How many tokens share a
    # chunk depends on timing (outputs are batched when the stream lags), so only the upper bound is exact.
    assert len(r.itl_s) <= 20 * 15 and all(g >= 0 for g in r.itl_s)
    assert r.goodput_req_per_s == pytest.approx(r.req_per_s)
    assert r.server_cpu_ms_per_req is not None and r.server_cpu_ms_per_req >= 0 and r.client_cpu_ms_per_req > 0


@pytest.mark.timeout(15)
def test_open_loop_unary_completions_tokens(server):
    _, url = server
    r = run_benchmark(BenchConfig(url=url, api="completions-tokens", stream=False, request_rate=200.0,
                                  concurrency=8, num_requests=12, isl=Dist("fixed", 40), osl=Dist("fixed", 5)))
    assert (r.completed, r.failed) == (12, 0) and r.mean_prompt_tokens == 40 and r.mean_output_tokens == 5
    assert r.ttft_ms["p50"] == r.e2e_ms["p50"]


@pytest.mark.timeout(15)
def test_errors_are_counted_by_status(server):
    _, url = server
    r = run_benchmark(BenchConfig(url=url, model="no-such-model", num_requests=3, isl=Dist("fixed", 16)))
    assert (r.completed, r.failed) == (0, 3) and r.errors == {"404": 3} and r.error_samples


@pytest.mark.timeout(20)
def test_cli_sweep_writes_json_and_table(server, tmp_path):
    _, url = server
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "bench", "--url", url, "--num-requests", "6",
                        "--sweep", "1,3", "--isl", "32", "--osl", "4", "--json", str(out)],
                       capture_output=True, text=True, timeout=20, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert "throughput (req/s)" in p.stdout and "TTFT ms p50/p90/p99" in p.stdout
    res = json.loads(out.read_text())["results"]
    assert [x["concurrency"] for x in res] == [1, 3] and all(x["completed"] == 6 for x in res)


@pytest.mark.timeout(10)
def test_cli_rejects_bad_distribution():
    p = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "bench", "--isl-dist", "normal:5"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--isl-dist" in p.stderr
