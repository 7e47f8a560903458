"""Runs the choices of one request against the pool and yields their Steps as engine steps arrive."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from typing import AsyncIterator

from dynamo_mono.engine import EngineRequest
from dynamo_mono.serving.admission import pass_queue
from dynamo_mono.serving.choice import ChoiceState, Step
from dynamo_mono.serving.pool import InstancePool

_DONE = object()


class Generation:
    """One API request's generation: n choices (and, for completions, several prompts) in parallel."""

    def __init__(self, pool: InstancePool, requests: list[EngineRequest], states: list[ChoiceState],
                 prompt_tokens: int, *, metrics=None, model: str = "", admission: tuple = (),
                 latency_sensitivity: float | None = None, echoes: list[str] | None = None) -> None:
        self.pool = pool
        self.remote = getattr(pool, "remote", False)  # a CorePool: the core admits (frontend_procs)
        self.echoes = echoes  # text each choice's output starts with (completions with echo)
        self.admission = admission  # AdmissionQueues to pass, in order (per model, then global)
        self.latency_sensitivity = latency_sensitivity
        self._held: list = []
        self._observed = False
        self.requests = requests
        self.states = states
        self.prompt_tokens = prompt_tokens
        self.metrics = metrics
        self.model = model
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.states)

    @property
    def cached_tokens(self) -> int:
        # each distinct prompt's cache hit, counted once (choices of one prompt share it); a prompt's
        # requests are consecutive, its first one has choice_index 0
        total = best = 0
        for r, s in zip(self.requests, self.states):
            if r.choice_index == 0:
                total += best
                best = 0
            if s.cached_tokens > best:
                best = s.cached_tokens
        return total + best

    def usage(self) -> dict:
        c = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": c,
            "total_tokens": self.prompt_tokens + c,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }

    async def admit(self) -> None:
        """Check routing preconditions and pass the admission queues; call before responding (so 4xx/429/503
        still become a status code, not an error event inside a stream)."""
        if self.remote:  # an HTTP process: the core checks, queues and starts the requests (one round trip)
            await self.pool.submit(self.requests, self.latency_sensitivity)
            return
        seen: set[int] = set()
        for req in self.requests:  # one check per distinct prompt (the choices of a prompt share it)
            if id(req.token_ids) not in seen:
                seen.add(id(req.token_ids))
                self.pool.preflight(req)
        for queue in self.admission:
            await self._admit(queue)
            self._held.append(queue)

    def finish(self) -> None:
        """Release admission slots and record metrics; idempotent."""
        if self.remote:
            self.pool.release(self.requests)  # streams never consumed (a failed response) end in the core too
        while self._held:
            self._held.pop().release()
        if not self._observed:
            self._observed = True
            self.observe()

    async def _admit(self, queue) -> None:
        gauge = self.metrics.model(self.model).queued if self.metrics is not None else None
        await pass_queue(queue, self.requests[0].priority, self.latency_sensitivity, gauge)

    async def steps(self) -> AsyncIterator[Step]:
        """Yield Steps until every choice has finished (a Step with finish_reason is each choice's last)."""
        if len(self.requests) == 1:  # the common case, without the extra generator layer of _one()
            state = self.states[0]
            async with aclosing(self.pool.generate(self.requests[0])) as outputs:
                async for out in outputs:
                    if out.token_ids:
                        self.last_token_at = now = time.perf_counter()
                        if self.first_token_at is None:
                            self.first_token_at = now
                    yield state.on_output(out)
                    if state.done:
                        return
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(req: EngineRequest, state: ChoiceState) -> None:
            try:
                async for step in self._one(req, state):
                    queue.put_nowait(step)
            except BaseException as exc:  # forwarded to the consumer, which re-raises it
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(_DONE)

        tasks = [asyncio.create_task(pump(r, s)) for r, s in zip(self.requests, self.states)]
        remaining = len(tasks)
        try:
            while remaining:
                item = await queue.get()
                if item is _DONE:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, req: EngineRequest, state: ChoiceState) -> AsyncIterator[Step]:
        async with aclosing(self.pool.generate(req)) as outputs:
            async for out in outputs:
                if out.token_ids:
                    now = time.perf_counter()
                    if self.first_token_at is None:
                        self.first_token_at = now
                    self.last_token_at = now
                step = state.on_output(out)
                yield step
                if state.done:
                    return

    def observe(self) -> None:
        """Record per-request latency and size metrics once, at the end."""
        if self.metrics is None:
            return
        m = self.metrics.model(self.model)
        now = time.perf_counter()
        m.duration.observe(now - self.started)
        m.isl.observe(self.prompt_tokens)
        out = self.completion_tokens
        m.osl.observe(out)
        m.output_tokens.inc(out)
        m.cached_tokens.observe(self.cached_tokens)
        if self.first_token_at is not None:
            m.ttft.observe(self.first_token_at - self.started)
            per_choice = out / max(1, len(self.states))
            if per_choice > 1 and self.last_token_at is not None:
                m.itl.observe((self.last_token_at - self.first_token_at) / (per_choice - 1))
