"""AdmissionQueue: priority order, 429 when full or waited too long, and no slot ever leaked by a cancel."""

from __future__ import annotations

import asyncio

import pytest

from dynamo_mono.http.errors import to_api_error
from dynamo_mono.serving.errors import QueueFull, QueueTimeout, ServingError
from dynamo_mono.serving.admission import AdmissionQueue
from tests.serving.helpers import MAX_TURNS, settle, turns

pytestmark = pytest.mark.timeout(10)


class Waiter:
    """A task that acquires a slot, records when it got it, and holds it until told to release."""

    def __init__(self, q: AdmissionQueue, name: str, granted: list[str], priority: int = 0,
                 latency_sensitivity: float | None = None) -> None:
        self.q = q
        self.name = name
        self.granted = granted
        self.holding = False
        self.task = asyncio.create_task(self._run(priority, latency_sensitivity))

    async def _run(self, priority: int, latency_sensitivity: float | None) -> None:
        await self.q.acquire(priority, latency_sensitivity)
        self.holding = True
        self.granted.append(self.name)

    def release(self) -> None:
        assert self.holding
        self.holding = False
        self.q.release()


async def enqueue(q: AdmissionQueue, granted: list[str], specs: list[tuple]) -> list[Waiter]:
    """Start waiters one at a time, each queued before the next arrives (arrival order = list order)."""
    out = []
    for spec in specs:
        before = q.waiting
        out.append(Waiter(q, *spec[:1], granted, *spec[1:]))
        await settle(lambda: q.waiting == before + 1, f"{spec[0]} queued")
    return out


async def drain_in_order(q: AdmissionQueue, holder_release, waiters: list[Waiter], granted: list[str]) -> None:
    """Free the held slot, then let each newly granted waiter release in turn, until all have run."""
    holder_release()
    for k in range(1, len(waiters) + 1):
        await settle(lambda: len(granted) == k, f"grant #{k}")
        by_name = {w.name: w for w in waiters}
        by_name[granted[-1]].release()
    await asyncio.gather(*(w.task for w in waiters))


async def test_limit_none_admits_everyone_at_once() -> None:
    q = AdmissionQueue(None, max_queue=0)
    for _ in range(50):
        await q.acquire()
    assert q.active == 50 and q.waiting == 0
    for _ in range(50):
        q.release()
    assert q.active == 0


async def test_under_the_limit_acquire_does_not_wait() -> None:
    q = AdmissionQueue(2, max_queue=0)  # max_queue=0: any wait would be a 429
    await q.acquire()
    await q.acquire(priority=5)
    assert q.active == 2 and q.waiting == 0
    q.release()
    await q.acquire()
    assert q.active == 2


async def test_lower_priority_value_first_fifo_within_a_priority() -> None:
    q = AdmissionQueue(1)
    await q.acquire()  # the test holds the only slot
    granted: list[str] = []
    waiters = await enqueue(q, granted, [("p5", 5), ("p1-a", 1), ("p3", 3), ("p1-b", 1), ("p0", 0), ("p1-c", 1)])
    await turns()
    assert granted == [] and q.active == 1 and q.waiting == 6
    await drain_in_order(q, q.release, waiters, granted)
    assert granted == ["p0", "p1-a", "p1-b", "p1-c", "p3", "p5"]
    assert q.active == 0 and q.waiting == 0


async def test_latency_sensitivity_moves_a_request_ahead() -> None:
    q = AdmissionQueue(1)
    await q.acquire()
    granted: list[str] = []
    waiters = await enqueue(q, granted, [
        ("p0", 0),
        ("p1-ls0.5", 1, 0.5),    # key 0.5: after p0
        ("p2-ls3", 2, 3.0),      # key -1: most urgent
        ("p1-ls1", 1, 1.0),      # key 0: ties with p0, arrived later
        ("p0-ls0", 0, 0.0),      # key 0: same as p0, arrived last of the ties
    ])
    await drain_in_order(q, q.release, waiters, granted)
    assert granted == ["p2-ls3", "p0", "p1-ls1", "p0-ls0", "p1-ls0.5"]


async def test_a_free_slot_is_not_taken_past_waiters() -> None:
    """A newcomer must not jump the queue when a slot frees up while others wait."""
    q = AdmissionQueue(1)
    await q.acquire()
    granted: list[str] = []
    (w,) = await enqueue(q, granted, [("first", 5)])
    q.release()  # the slot goes to `first` at once, even before its task runs
    late = Waiter(q, "late", granted, priority=-100)
    await settle(lambda: granted == ["first"], "first granted")
    await turns()
    assert granted == ["first"] and q.active == 1 and q.waiting == 1
    w.release()
    await settle(lambda: granted == ["first", "late"], "late granted")
    late.release()
    await asyncio.gather(w.task, late.task)
    assert q.active == 0


async def test_queue_full_is_429_with_retry_after() -> None:
    q = AdmissionQueue(1, max_queue=2, name="model 'm'")
    await q.acquire()
    granted: list[str] = []
    waiters = await enqueue(q, granted, [("a", 0), ("b", 0)])
    with pytest.raises(ServingError) as e:
        await q.acquire(priority=-10)  # urgency does not bypass the queue bound
    err = e.value
    assert isinstance(err, QueueFull)
    http = to_api_error(err)
    assert http.status == 429 and http.headers.get("Retry-After") == "1" and http.code == "queue_full"
    assert "model 'm'" in err.message and "2 waiting" in err.message
    assert to_api_error(err).openai_body()["error"]["type"] == "rate_limit_error"
    assert q.active == 1 and q.waiting == 2  # the refusal changed nothing
    await drain_in_order(q, q.release, waiters, granted)
    assert granted == ["a", "b"] and q.active == 0


async def test_max_queue_zero_refuses_any_wait_but_admits_when_free() -> None:
    q = AdmissionQueue(1, max_queue=0)
    await q.acquire()
    with pytest.raises(ServingError) as e:
        await q.acquire()
    assert isinstance(e.value, QueueFull) and to_api_error(e.value).status == 429
    q.release()
    await q.acquire()
    assert q.active == 1
    q.release()
    assert q.active == 0


async def test_max_wait_is_429_and_leaves_no_trace() -> None:
    # Nothing ever releases the held slot, so the outcome (a timeout) does not depend on how fast the machine is;
    # max_wait only bounds how long the test takes.
    q = AdmissionQueue(1, max_wait=0.01)
    await q.acquire()
    with pytest.raises(ServingError) as e:
        await q.acquire()
    err = e.value
    assert isinstance(err, QueueTimeout)
    http = to_api_error(err)
    assert http.status == 429 and http.code == "queue_timeout" and http.headers.get("Retry-After") == "1"
    assert q.waiting == 0 and q.active == 1
    q.release()  # the timed-out waiter must not be handed this slot
    assert q.active == 0
    await q.acquire()
    assert q.active == 1


async def test_cancelled_waiter_never_gets_a_slot() -> None:
    q = AdmissionQueue(1)
    await q.acquire()
    granted: list[str] = []
    gone, stays = await enqueue(q, granted, [("gone", 0), ("stays", 1)])
    gone.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone.task
    assert q.waiting == 1 and q.active == 1
    q.release()  # skips the cancelled waiter, which was more urgent
    await settle(lambda: granted == ["stays"], "stays granted")
    assert q.active == 1
    stays.release()
    await stays.task
    assert q.active == 0 and q.waiting == 0


async def test_cancel_racing_with_grant_returns_the_slot() -> None:
    """release() grants a waiter, which is cancelled before it runs: the slot goes back, to the next waiter."""
    q = AdmissionQueue(1)
    await q.acquire()
    granted: list[str] = []
    first, second = await enqueue(q, granted, [("first", 0), ("second", 0)])
    q.release()  # grants `first` (active stays 1, now on its behalf) ...
    first.task.cancel()  # ... which is cancelled in the same loop turn, before it sees the grant
    with pytest.raises(asyncio.CancelledError):
        await first.task
    assert granted == [] or granted == ["second"]
    await settle(lambda: granted == ["second"], "second granted")
    assert q.active == 1 and q.waiting == 0
    second.release()
    await second.task
    assert q.active == 0


async def test_cancel_racing_with_grant_and_no_one_else_waiting() -> None:
    q = AdmissionQueue(1)
    await q.acquire()
    granted: list[str] = []
    (w,) = await enqueue(q, granted, [("w", 0)])
    q.release()
    w.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w.task
    assert granted == [] and q.active == 0 and q.waiting == 0
    await q.acquire()  # the slot is really free
    assert q.active == 1


@pytest.mark.parametrize("max_wait", [1e-9, 0.0])
async def test_timeout_racing_with_grant_never_leaks(max_wait: float) -> None:
    """Whichever wins, the grant or the timeout, the slot count matches the holders."""
    q = AdmissionQueue(1, max_wait=max_wait)
    await q.acquire()
    outcome: list[str] = []

    async def wait() -> None:
        try:
            await q.acquire()
            outcome.append("granted")
        except ServingError as exc:
            outcome.append(f"{to_api_error(exc).status}")

    t = asyncio.create_task(wait())
    await settle(lambda: q.waiting == 1 or outcome, "waiter queued or refused")
    q.release()  # may coincide with the waiter's timeout
    await t
    assert outcome in (["granted"], ["429"])
    assert q.active == (1 if outcome == ["granted"] else 0)
    assert q.waiting == 0


async def test_many_cancels_and_grants_keep_the_count_exact() -> None:
    """Cancel every other waiter at various points (queued, granted-not-run, holding); the count ends at 0."""
    q = AdmissionQueue(2)
    await q.acquire()
    await q.acquire()
    granted: list[str] = []
    waiters = await enqueue(q, granted, [(f"w{i}", i % 3) for i in range(12)])
    for w in waiters[::4]:
        w.task.cancel()  # cancelled while queued
    q.release()
    q.release()  # two grants; cancel whichever of them are still in the odd positions before they run
    for w in waiters[1::4]:
        w.task.cancel()
    for _ in range(MAX_TURNS):
        for w in waiters:
            if w.holding:
                w.release()
        if all(w.task.done() for w in waiters):
            break
        await asyncio.sleep(0)
    assert all(w.task.done() for w in waiters)
    for w in waiters:
        if w.holding:
            w.release()
    assert q.active == 0 and q.waiting == 0
    cancelled = {w.name for w in waiters if w.task.cancelled()}
    assert not cancelled & set(granted)
