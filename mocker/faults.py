"""Fault injection for the mocker: per-request annotations and server-level failure options.

Request annotations (``request.annotations`` strings):
- ``mocker.fail_after=K``: the request fails (finish_reason "error") after K generated tokens;
- ``mocker.crash``: the whole instance fails all its requests, clears its KV cache and reports
  unhealthy for --mocker-crash-duration seconds (or until a ``mocker.recover`` request / recover());
- ``mocker.recover``: clear a crash before handling this request;
- ``mocker.stall=SECONDS``: the instance stops stepping for SECONDS (requests wait, nothing fails);
- ``mocker.slow_prefill=FACTOR``: this request's prefill takes FACTOR times longer.
Server level: --mocker-fail-after K applies to instances listed in --mocker-fault-instances (all if unset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dynamo_mono.config import ConfigError


@dataclass(slots=True)
class RequestFaults:
    """Faults requested by one request's annotations."""

    fail_after: int | None = None
    crash: bool = False
    recover: bool = False
    stall_s: float | None = None
    slow_prefill: float = 1.0


def parse_annotations(annotations: list[str] | None) -> RequestFaults:
    """Read mocker.* annotations; malformed values are ignored (annotations are hints, not validated input)."""
    f = RequestFaults()
    for a in annotations or ():
        if not a.startswith("mocker."):
            continue
        key, _, val = a[7:].partition("=")
        try:
            if key == "fail_after":
                f.fail_after = max(0, int(val))
            elif key == "crash":
                f.crash = True
            elif key == "recover":
                f.recover = True
            elif key == "stall":
                f.stall_s = max(0.0, float(val))
            elif key == "slow_prefill":
                f.slow_prefill = max(0.0, float(val))
        except ValueError:
            continue
    return f


def parse_instances(raw: str | None) -> frozenset[int] | None:
    """--mocker-fault-instances: comma-separated instance ids; None = every instance."""
    if raw is None or not raw.strip():
        return None
    try:
        return frozenset(int(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"invalid --mocker-fault-instances={raw!r}: expected comma-separated integers") from None


class InstanceFaults:
    """Crash / stall state of one mocker instance."""

    def __init__(self, crash_duration: float, fail_after: int | None = None) -> None:
        self.crash_duration = crash_duration
        self.fail_after = fail_after  # server-level, already filtered by instance id
        self.crashed_until = 0.0
        self.stall_until = 0.0

    def crash(self) -> None:
        self.crashed_until = time.monotonic() + self.crash_duration

    def recover(self) -> None:
        self.crashed_until = 0.0
        self.stall_until = 0.0

    def crashed(self) -> bool:
        return time.monotonic() < self.crashed_until

    def stall(self, seconds: float) -> None:
        self.stall_until = max(self.stall_until, time.monotonic() + seconds)

    def stall_remaining(self) -> float:
        return self.stall_until - time.monotonic()
