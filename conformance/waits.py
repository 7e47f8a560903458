"""Wait for a server state (a /metrics gauge, a condition) instead of sleeping; deadlines are only hang guards."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Awaitable, Callable, TypeVar

import aiohttp

from conformance.server import metric_value

T = TypeVar("T")

# A hang guard, never a timing expectation: a state that is reached at all is reached well before it.
HANG_GUARD_S = 30.0
_POLL_S = 0.02  # paces the polling only; no outcome depends on it

IDLE_GAUGES = ("dynamo_frontend_inflight_requests", "dynamo_frontend_queued_requests",
               "dynamo_engine_kv_active_blocks", "dynamo_engine_running_requests", "dynamo_engine_waiting_requests")


async def metrics_text(url: str) -> str:
    """The server's /metrics text (`url` is the server's base URL)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/metrics") as r:
            assert r.status == 200, r.status
            return await r.text()


async def wait_until(condition: Callable[[], T | Awaitable[T]], what: str, timeout: float = HANG_GUARD_S) -> T:
    """Poll `condition` (sync or async) until it returns something truthy, and return that; AssertionError
    naming `what` if the hang guard runs out first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(_POLL_S)


async def wait_for_metric(url: str, name: str, predicate: Callable[[float], bool], *,
                          labels: dict[str, str] | None = None, timeout: float = HANG_GUARD_S) -> float:
    """Poll /metrics until `predicate(value)` holds for metric `name` (summed over the label sets that match
    `labels`); returns the value. AssertionError with the last value if the hang guard runs out."""
    last: list[float] = []

    async def check() -> bool:
        value = metric_value(await metrics_text(url), name, labels)
        last[:] = [value]
        return predicate(value)

    try:
        await wait_until(check, f"{name}{labels or ''}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last value {last[0] if last else None})") from None
    return last[0]


async def wait_idle(url: str, gauges: tuple[str, ...] = IDLE_GAUGES, timeout: float = HANG_GUARD_S) -> str:
    """Poll until every gauge in `gauges` is 0 (nothing in flight, queued, running or holding KV blocks);
    returns that /metrics text. AssertionError with the gauges still non-zero if the hang guard runs out."""
    last: dict[str, float] = {}
    text = ""

    async def idle() -> bool:
        nonlocal text
        text = await metrics_text(url)
        last.clear()
        last.update({g: metric_value(text, g) for g in gauges})
        return not any(last.values())

    try:
        await wait_until(idle, "the server to go idle", timeout)
    except AssertionError as exc:
        busy = {g: v for g, v in last.items() if v}
        raise AssertionError(f"{exc}; still non-zero: {busy}") from None
    return text
