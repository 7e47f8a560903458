"""NVIDIA aiperf against mocker servers: `--endpoint-type responses` and `chat` (unary and streamed),
`embeddings` (an embedding model) and `image_generation` (an image model); reports errors.

Streamed runs use the server's token counts (aiperf then sends `stream_options.include_usage`); one more
responses run has multi-turn conversations, which aiperf chains with `previous_response_id` (the server echoes
`store: true`), so the responses store is exercised too: the report counts the chained requests.

The output limit (300) is above the mocker's longest answer (256 tokens): a response cut by max_output_tokens
ends, as OpenAI specifies, with `response.incomplete`, and aiperf reads server usage only from
`response.completed` (and chains only completed responses).

aiperf lives in its own venv (its dependencies are not the server's): created at /tmp/aiperf-venv with
`pip install aiperf` when missing. A benchmark script, not part of the test suite:

    python tests/benchmarks/aiperf_check.py [--requests 50] [--concurrency 4] [--venv /tmp/aiperf-venv]

Exit status 0 when every run finished all its requests without an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from conformance.server import ServerProcess, start_server  # noqa: E402
from dynamo_mono.assets import TINY_CHATML_DIR  # noqa: E402

MODEL = "tiny-chatml"


def ensure_aiperf(venv: Path) -> Path:
    exe = venv / "bin" / "aiperf"
    if not exe.exists():
        print(f"installing aiperf into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "aiperf"], check=True)
    return exe


def run_aiperf(exe: Path, server: ServerProcess, endpoint: str, stream: bool, requests: int, concurrency: int,
               out: Path, extra: tuple[str, ...] = (), model: str = MODEL) -> dict:
    """One aiperf profile run; its summary (request count, errors, latency, chained requests) from its exports."""
    cmd = [str(exe), "profile", "-m", model, "--url", server.url, "--endpoint-type", endpoint,
           "--request-count", str(requests), "--concurrency", str(concurrency),
           "--tokenizer", str(TINY_CHATML_DIR), "--prompt-input-tokens-mean", "64",
           *(() if endpoint in ("embeddings", "image_generation") else ("--prompt-output-tokens-mean", "300")),
           "--random-seed", "1", "--ui-type", "none",
           "--no-server-metrics", "--export-level", "raw", "--artifact-dir", str(out)]
    if stream:
        cmd += ["--streaming", "--use-server-token-count"]
    cmd += extra
    # not HF_HUB_OFFLINE: aiperf's offline mode looks a local tokenizer directory up in the hub cache and fails
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    exports = sorted(out.rglob("profile_export_aiperf.json"))
    if proc.returncode != 0 or not exports:
        return {"ok": False, "detail": f"aiperf exited {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}"}
    data = json.loads(exports[-1].read_text())
    return {**summarize(data, requests), "chained": chained_requests(out)}


def chained_requests(out: Path) -> int:
    """Requests aiperf sent with a previous_response_id (from its raw export)."""
    n = 0
    for path in out.rglob("profile_export_raw.jsonl"):
        for line in path.read_text().splitlines():
            payload = json.loads(line).get("payload") or {}
            n += bool(payload.get("previous_response_id"))
    return n


def _metric(data: dict, name: str, stat: str = "avg") -> float | None:
    m = data.get(name)
    if isinstance(m, dict):
        v = m.get(stat)
        return float(v) if v is not None else None
    return None


def summarize(data: dict, expected: int) -> dict:
    done = _metric(data, "request_count") or 0
    errors = _metric(data, "error_request_count") or 0
    summary = data.get("error_summary") or []
    ok = errors == 0 and not summary and done == expected
    return {"ok": ok, "requests": int(done), "errors": int(errors), "error_summary": summary,
            "latency_ms_p50": _metric(data, "request_latency", "p50"),
            "ttft_ms_p50": _metric(data, "time_to_first_token", "p50"),
            "output_tokens_avg": _metric(data, "output_sequence_length")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--venv", type=Path, default=Path("/tmp/aiperf-venv"))
    args = ap.parse_args()
    exe = ensure_aiperf(args.venv)
    server = start_server(["--engine", "mocker", "--speedup-ratio", "0", "--log-level", "warning"])
    failed = 0
    try:
        with tempfile.TemporaryDirectory(prefix="aiperf-") as tmp:
            runs = [(endpoint, stream, args.requests, ()) for endpoint in ("responses", "chat")
                    for stream in (False, True)]
            sessions = max(1, args.requests // 3)  # 3 turns each: 2 of every 3 requests chain to the previous one
            runs.append(("responses", True, sessions * 3, ("--conversation-num", str(sessions),
                                                          "--conversation-turn-mean", "3")))
            for k, (endpoint, stream, requests, extra) in enumerate(runs):
                r = run_aiperf(exe, server, endpoint, stream, requests, args.concurrency, Path(tmp) / str(k), extra)
                if extra and r["ok"] and r["chained"] != sessions * 2:
                    r = {**r, "ok": False, "detail": f"expected {sessions * 2} chained requests"}
                failed += not r["ok"]
                label = f"{endpoint} {'stream' if stream else 'unary'}{' multi-turn' if extra else ''}"
                print(f"{label:28} {json.dumps(r)}", flush=True)
    finally:
        server.stop()
    embedder = start_server(["--engine", "mocker", "--model-kind", "embedding", "--speedup-ratio", "0",
                             "--log-level", "warning"])
    try:
        with tempfile.TemporaryDirectory(prefix="aiperf-") as tmp:
            r = run_aiperf(exe, embedder, "embeddings", False, args.requests, args.concurrency, Path(tmp))
            failed += not r["ok"]
            print(f"{'embeddings unary':28} {json.dumps(r)}", flush=True)
    finally:
        embedder.stop()
    # An image model (the mocker's, 256x256, 4 steps): aiperf sends b64_json requests and decodes the images.
    painter = start_server(["--engine", "mocker", "--model-kind", "image", "--served-model-name", "mock-image",
                            "--default-num-inference-steps", "4", "--speedup-ratio", "0", "--log-level", "warning"])
    try:
        with tempfile.TemporaryDirectory(prefix="aiperf-") as tmp:
            r = run_aiperf(exe, painter, "image_generation", False, args.requests, args.concurrency, Path(tmp),
                           ("--extra-inputs", "size:256x256"),
                           model="mock-image")
            failed += not r["ok"]
            print(f"{'image_generation unary':28} {json.dumps(r)}", flush=True)
    finally:
        painter.stop()
    print("aiperf check:", "OK" if not failed else f"{failed} run(s) with errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
