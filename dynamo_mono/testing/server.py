"""Start a real `dynamo-mono serve` subprocess for the kit (ephemeral port, ready file) and read its /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass


@dataclass
class KitServer:
    """A running server: base URL, process and log file."""

    proc: subprocess.Popen
    log_path: str
    url: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start(args: list[str], *, env: dict[str, str] | None = None, pythonpath: list[str] | None = None,
          timeout: float = 120.0) -> KitServer:
    """`python -m dynamo_mono.cli serve ARGS` on 127.0.0.1, port 0; returns once /ready answers 200 (raises with
    the log if the process exits or the hang guard runs out)."""
    tmp = tempfile.mkdtemp(prefix="dynamo-mono-kit-")
    ready_file = os.path.join(tmp, "ready")
    log_path = os.path.join(tmp, "server.log")
    full_env = {**os.environ, **(env or {})}
    if pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *filter(None, [full_env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "dynamo_mono.cli", "serve", "--host", "127.0.0.1", "--port", "0",
           "--ready-file", ready_file, *args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{open(log_path).read()[-6000:]}")
        if os.path.exists(ready_file):
            address = open(ready_file).read().strip()
            url = address if "://" in address else "http://" + address
            try:
                with urllib.request.urlopen(url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return KitServer(proc, log_path, url)
            except Exception:
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server not ready after {timeout}s:\n{open(log_path).read()[-6000:]}")


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of a Prometheus metric's samples in /metrics text: all label sets, or those carrying every label given."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if labels and not labels.items() <= _labels(line).items():
                continue
            total += float(line.rsplit(" ", 1)[1])
    return total


def _labels(sample: str) -> dict[str, str]:
    head = sample.split(" ", 1)[0]
    if "{" not in head:
        return {}
    inner = sample.split("{", 1)[1].rsplit("}", 1)[0]
    return dict(part.split("=", 1) for part in inner.replace('"', "").split(",") if part)
