"""Start a real `dynamo-mono serve` subprocess on an ephemeral port and wait until it is ready."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

from dynamo_mono.testing.server import metric_value  # noqa: F401  (the one /metrics reader; re-exported)


@dataclass
class LoggedProcess:
    """A dynamo-mono subprocess with its log file; stop() signals it and waits (kill after a timeout)."""

    proc: subprocess.Popen
    log_path: str

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@dataclass
class ServerProcess(LoggedProcess):
    """A running server: its base URL, process and captured log."""

    host: str = "127.0.0.1"
    port: int = 0
    args: list[str] = field(default_factory=list)
    scheme: str = "http"  # "https" when started with --tls-cert-path / --tls-key-path
    ca_file: str | None = None  # the CA that verifies an https server's certificate

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def start_server(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60.0,
                 ca_file: str | None = None) -> ServerProcess:
    """`dynamo-mono serve ARGS --port 0`, returning once /ready answers 200 (or raising with the log).

    A TLS server (its ready file says https://) is probed over https, verified against ca_file.
    """
    tmp = tempfile.mkdtemp(prefix="dynamo-mono-")
    ready_file = os.path.join(tmp, "ready")
    log_path = os.path.join(tmp, "server.log")
    cmd = [sys.executable, "-m", "dynamo_mono.cli", "serve", "--host", "127.0.0.1", "--port", "0",
           "--ready-file", ready_file, *args]
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{open(log_path).read()}")
        if os.path.exists(ready_file):
            scheme, _, address = open(ready_file).read().strip().rpartition("://")
            host, port = address.rsplit(":", 1)
            server = ServerProcess(proc, log_path, host, int(port), args, scheme or "http", ca_file)
            if server.scheme == "https" and ca_file is None:
                server.stop()
                raise RuntimeError("the server serves https: pass start_server(..., ca_file=CA) to verify it")
            if _ready(server):
                return server
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"server not ready after {timeout}s:\n{open(log_path).read()}")


def _ready(server: ServerProcess) -> bool:
    ctx = ssl.create_default_context(cafile=server.ca_file) if server.scheme == "https" else None
    try:
        with urllib.request.urlopen(server.url + "/ready", timeout=2, context=ctx) as r:
            return r.status == 200
    except Exception:
        return False
