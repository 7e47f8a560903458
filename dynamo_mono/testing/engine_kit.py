"""KitTarget (one engine under the kit) and the client the kit's cases use: HTTP calls, /metrics, waits."""

from __future__ import annotations

import http.client
import importlib
import importlib.util
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from dynamo_mono.testing.server import KitServer, metric_value, start

# Capabilities a target may claim; each enables the kit cases that check it (the others always run).
CAPABILITIES = frozenset({
    "logprobs",   # per-token logprobs and top alternatives
    "n",          # n > 1 choices
    "priority",   # requests carry a priority the engine schedules by (card.supports_priority)
    "dp_rank",    # the target runs data parallel size >= 2 and honours nvext.dp_rank pins
    "kv_events",  # KV events: stored blocks are hit later (cached_tokens, router overlap), evictions announced
    "fault",      # KitTarget.fault_body makes the engine fail a request (health must survive it)
    "lora",       # LoRA adapters (not exercised by the kit yet; claimed for the docs table)
})

# A hang guard, never a timing expectation: a state reached at all is reached well before it.
HANG_GUARD_S = 60.0


@dataclass(frozen=True)
class KitTarget:
    """One engine configuration under the kit.

    serve_args: what follows `dynamo-mono serve` (the kit adds host, port, ready file and `--router-mode kv`).
    env / pythonpath: added to the server's environment (pythonpath entries go first on PYTHONPATH).
    capabilities: subset of CAPABILITIES the engine claims. requires: modules that must import for the target
    to run at all (else its cases are skipped with `skip_reason`). block_size: the KV block size the target runs
    with; its KV cache should be small (a few hundred blocks) so the eviction case stays short. vocab_size: token
    ids 0..vocab_size-1 are valid for the served model. fault_body: JSON merged into a /v1/completions body to make
    the engine (not the server) fail that request. prepare: called once before the server starts; returns more
    serve arguments (e.g. builds a tiny model and returns `--model PATH`). max_tokens_long: output length of the
    requests that must still be running when the kit looks at them (abort, dp pins, load): long enough that no
    machine finishes them before a /metrics poll. serial: the target runs one request at a time per dp rank (max
    running 1), so the priority case can check queue order.
    """

    name: str
    serve_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    pythonpath: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    requires: tuple[str, ...] = ()
    skip_reason: str = ""
    block_size: int = 16
    vocab_size: int = 2636
    fault_body: dict[str, Any] | None = None
    prepare: Callable[[], list[str]] | None = None
    start_timeout: float = 120.0
    max_tokens_long: int = 4000
    serial: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"KitTarget {self.name!r}: unknown capabilities {sorted(unknown)}; known: "
                             f"{sorted(CAPABILITIES)}")
        if "fault" in self.capabilities and not self.fault_body:
            raise ValueError(f"KitTarget {self.name!r} claims 'fault' but gives no fault_body")

    def missing(self) -> list[str]:
        """Modules of `requires` that do not import here."""
        out = []
        for m in self.requires:
            try:
                found = importlib.util.find_spec(m) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(m)
        return out


# The built-in simulated engine: realistic step times (speedup 1), a small KV cache, two dp ranks.
MOCKER_TARGET = KitTarget(
    name="mocker",
    serve_args=("--engine", "mocker", "--block-size", "16", "--num-gpu-blocks-override", "128",
                "--data-parallel-size", "2", "--speedup-ratio", "1", "--max-num-seqs", "1"),
    serial=True,
    max_tokens_long=1500,
    capabilities=frozenset({"logprobs", "n", "priority", "dp_rank", "kv_events", "fault"}),
    block_size=16,
    fault_body={"nvext": {"annotations": ["mocker.fail_after=2"]}},
)

BUILTIN_TARGETS = {"mocker": MOCKER_TARGET}


def resolve_target(spec: str) -> KitTarget:
    """A built-in target by name, or `module:attribute` naming a KitTarget (a plugin's own)."""
    if spec in BUILTIN_TARGETS:
        return BUILTIN_TARGETS[spec]
    mod, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"unknown kit target {spec!r}: use one of {sorted(BUILTIN_TARGETS)} or module:attribute")
    target = getattr(importlib.import_module(mod), attr)
    if not isinstance(target, KitTarget):
        raise TypeError(f"{spec} is a {type(target).__name__}, not a KitTarget")
    return target


class KitClient:
    """The served model behind one running server, and the calls the kit's cases make to it."""

    def __init__(self, target: KitTarget, server: KitServer) -> None:
        self.target = target
        self.server = server
        self.url = server.url
        self.model = self.get("/v1/models")["data"][0]["id"]

    # --- plain HTTP -----------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=HANG_GUARD_S) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a unary POST; error statuses are returned, not raised."""
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=HANG_GUARD_S * 2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def open_stream(self, path: str, body: dict[str, Any]) -> "SseStream":
        host, port = self.url.split("//", 1)[1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=HANG_GUARD_S * 2)
        conn.request("POST", path, json.dumps({**body, "stream": True}), {"Content-Type": "application/json"})
        return SseStream(conn, conn.getresponse())

    def chat(self, content: str, **fields: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": content}], **fields}

    def completion(self, prompt: str | list[int], **fields: Any) -> dict[str, Any]:
        return {"model": self.model, "prompt": prompt, **fields}

    # --- /metrics -------------------------------------------------------------------------------
    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=HANG_GUARD_S) as r:
            return r.read().decode()

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric_value(self.metrics(), name, labels)

    def wait_metric(self, name: str, pred: Callable[[float], bool], labels: dict[str, str] | None = None) -> float:
        """Poll /metrics until pred(value) holds; AssertionError with the last value after the hang guard."""
        last: list[float] = []

        def check() -> bool:
            last[:] = [self.metric(name, labels)]
            return pred(last[0])

        wait_until(check, f"{name}{labels or ''} (last value {{last}})", last=last)
        return last[0]

    def wait_idle(self) -> str:
        """Until nothing is in flight, queued, running, waiting or holding KV blocks; returns that /metrics text."""
        gauges = ("dynamo_frontend_inflight_requests", "dynamo_frontend_queued_requests",
                  "dynamo_engine_running_requests", "dynamo_engine_waiting_requests",
                  "dynamo_engine_kv_active_blocks")
        state: dict[str, Any] = {}

        def idle() -> bool:
            text = self.metrics()
            busy = {g: metric_value(text, g) for g in gauges if metric_value(text, g)}
            state.update(text=text, busy=busy)
            return not busy

        wait_until(idle, "the server to go idle (still busy: {last})", last=state)
        return state["text"]


def wait_until(cond: Callable[[], Any], what: str, *, last: Any = None, timeout: float = HANG_GUARD_S) -> Any:
    """Poll cond until truthy (the deadline only guards against a hang); AssertionError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            shown = last.get("busy") if isinstance(last, dict) else last
            raise AssertionError(f"timed out after {timeout}s waiting for " + what.replace("{last}", str(shown)))
        time.sleep(0.02)


@dataclass
class SseStream:
    """An open server-sent-events response: iterate its JSON events; close() drops the connection."""

    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse
    events: list[dict[str, Any]] = field(default_factory=list)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        assert self.resp.status == 200, (self.resp.status, self.resp.read()[:500])
        for raw in self.resp:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            ev = json.loads(data)
            self.events.append(ev)
            yield ev

    def close(self) -> None:
        if self.conn.sock is not None:
            self.conn.sock.close()
        self.conn.close()
