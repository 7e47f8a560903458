"""Start a server and worker processes on loopback for the scale-out tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable

from conformance.server import LoggedProcess

TOKEN = "test-worker-token"


@dataclass
class Proc(LoggedProcess):
    """A dynamo-mono subprocess (server or worker) and its log file."""

    url: str = ""


def _popen(args: list[str], name: str, env: dict[str, str] | None = None) -> Proc:
    tmp = tempfile.mkdtemp(prefix=f"dm-{name}-")
    log_path = os.path.join(tmp, f"{name}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dynamo_mono.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return Proc(proc, log_path)


def start_server(args: list[str], *, token: str | None = TOKEN, timeout: float = 30.0) -> Proc:
    """`serve --port 0` (+ --worker-token); returns once the HTTP port answers /live."""
    tmp = tempfile.mkdtemp(prefix="dm-ready-")
    ready = os.path.join(tmp, "ready")
    extra = ["--worker-token", token] if token else []
    p = _popen(["serve", "--host", "127.0.0.1", "--port", "0", "--ready-file", ready, *extra, *args], "server")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.proc.poll() is not None:
            raise RuntimeError(f"server exited with {p.proc.returncode}:\n{p.log()}")
        if os.path.exists(ready):
            host, port = open(ready).read().strip().rsplit(":", 1)
            p.url = f"http://{host}:{port}"
            return p
        time.sleep(0.05)
    p.stop(signal.SIGKILL)
    raise RuntimeError(f"server not up after {timeout}s:\n{p.log()}")


def start_worker(url: str, args: list[str] = (), *, token: str | None = TOKEN, name: str = "worker",
                 env: dict[str, str] | None = None) -> Proc:
    extra = ["--worker-token", token] if token else []
    return _popen(["worker", "--connect", url, "--connect-backoff-max", "0.3", "--worker-name", name,
                   *extra, *args], name, env)


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def post_json(url: str, body: dict, timeout: float = 30.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def remote_instances(url: str) -> list[dict]:
    _, body = get_json(url + "/health")
    return [i for i in (body or {}).get("instances", []) if not i["local"]]


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
