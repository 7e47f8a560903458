"""Engine instances of one model: routing, dispatch, queueing when busy, and migration on failure."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator

from dynamo_mono.block_hash import block_hashes, lora_seed
from dynamo_mono.engine import (
    EmbeddingOutput,
    EmbeddingRequest,
    Engine,
    EngineError,
    EngineOutput,
    EngineRequest,
    InstanceKey,
    KvTransferParams,
    ModelCard,
)
from dynamo_mono.media.contract import MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.serving.errors import ContextLengthExceeded, InvalidRequest, NoInstance as NoReadyInstance, QueueTimeout
from dynamo_mono.router.router import NoInstance, Router

log = logging.getLogger("dynamo_mono.pool")


@dataclass
class Instance:
    """One engine instance (local or remote) and its health bookkeeping."""

    worker_id: int
    engine: Engine
    card: ModelCard
    local: bool = True
    consecutive_failures: int = 0
    disabled_until: float = 0.0
    started: float = field(default_factory=time.monotonic)
    draining: bool = False  # being scaled down: finishes what it has, takes nothing new

    def keys(self) -> list[InstanceKey]:
        return [(self.worker_id, r) for r in range(self.card.dp_size)]

    @property
    def role(self) -> str:
        """Disaggregation role: "agg" (whole requests), "prefill" (prompt + first token) or "decode"."""
        return self.card.disaggregation_mode

    def usable(self, now: float) -> bool:
        return not self.draining and now >= self.disabled_until and self.engine.healthy()

    def fits(self, num_tokens: int) -> bool:
        """Whether a prompt of num_tokens can ever start decoding here (unknown capacity: assume so)."""
        total = self.card.total_kv_blocks
        return total is None or kv_blocks_needed(num_tokens, self.card.block_size) <= total


def kv_blocks_needed(num_tokens: int, block_size: int) -> int:
    """KV blocks (of one dp rank) a prompt needs before its second token: the prompt's tokens plus the slot
    of the first generated token, whose KV the first decode step writes (the mocker rejects less; vLLM too)."""
    return num_tokens // block_size + 1


def _fit_tokens(req: EngineRequest | EmbeddingRequest | MediaRequest) -> int:
    """Tokens one engine sequence of req holds: the prompt, or an embedding batch's longest input (none for
    media)."""
    t = type(req)
    if t is EmbeddingRequest:
        return max(map(len, req.token_ids), default=0)
    if t is MediaRequest:
        return 0
    return len(req.token_ids)


def _route_shape(req: EngineRequest | EmbeddingRequest | MediaRequest) -> tuple[list[int], int, int, int]:
    """What the router weighs for req: (block hashes, load in tokens, tokens that must fit, expected output)."""
    t = type(req)
    if t is EmbeddingRequest:  # an embedding batch: no prefix to match, load = all its tokens, each input must fit
        return [], sum(map(len, req.token_ids)), _fit_tokens(req), 0
    if t is MediaRequest:  # no KV: the load is the outputs to make (frames count as outputs)
        return [], req.n * max(1, req.num_frames), 0, 0
    return req.block_hashes or [], len(req.token_ids), len(req.token_ids), req.expected_output_tokens or 0


def _check_media(out: MediaOutput, req: MediaRequest, inst: Instance) -> None:
    """A non-retryable EngineError when a generator's output breaks the contract (a bug, not bad luck)."""
    if len(out.files) != req.n or not all(f.data for f in out.files):
        raise EngineError(f"instance {inst.worker_id} returned {len(out.files)} media files (empty ones among them: "
                          f"{sum(not f.data for f in out.files)}) for a request of n={req.n}", retryable=False)


def _check_embeddings(out: EmbeddingOutput, req: EmbeddingRequest, inst: Instance) -> None:
    """A non-retryable EngineError when an engine's answer breaks the contract (a bug, not bad luck)."""
    dim = req.dimensions or inst.card.embedding_dim
    shape = getattr(out.embeddings, "shape", None)
    if shape != (len(req.token_ids), dim):
        raise EngineError(f"instance {inst.worker_id} returned embeddings of shape {shape}; expected "
                          f"{(len(req.token_ids), dim)}", retryable=False)


def engine_priority(card: ModelCard, priority: int) -> int:
    """The API's priority (lower = more urgent) in the engine's own convention; 0 when it has none."""
    if not card.supports_priority:
        return 0
    return -priority if card.priority_higher_is_urgent else priority


class InstancePool:
    """Routes requests of one model over its instances and streams the chosen engine's outputs."""

    # An instance failing this many requests in a row is taken out of routing for a while.
    FAILURE_THRESHOLD = 3
    FAILURE_COOLDOWN_S = 2.0
    # Disaggregated serving; the server sets these from --router-conditional-disagg / --disagg-min-prefill-tokens.
    conditional_disagg = False
    disagg_min_prefill_tokens = 0
    disagg_prefill_timeout = 0.0  # seconds a prefill instance may take before the decode instance prefills; 0 = none
    remote = False  # True for frontend_procs.core_pool.CorePool (an HTTP process hands requests to the core)

    def __init__(self, model: str, router: Router, *, migration_limit: int = 0,
                 queue_timeout: float | None = None, metrics=None) -> None:
        self.model = model
        self.router = router
        self.migration_limit = migration_limit
        self.queue_timeout = queue_timeout
        self.metrics = metrics
        self.instances: dict[int, Instance] = {}
        self.queued = 0
        router.on_resync = self._resync

    # --- membership ------------------------------------------------------------------------
    def add(self, instance: Instance) -> None:
        self.instances[instance.worker_id] = instance
        instance.engine.set_kv_event_sink(self.router.on_kv_events)
        snapshot = instance.engine.kv_snapshot() if instance.card.kv_events else None
        for key in instance.keys():
            own = [b for b in snapshot if b.dp_rank == key[1]] if snapshot else None
            self.router.add_instance(key, own, total_blocks=instance.card.total_kv_blocks,
                                     max_num_batched_tokens=instance.card.max_num_batched_tokens,
                                     kv_events=instance.card.kv_events)

    def _resync(self, key: InstanceKey) -> None:
        """The router saw a gap in an instance's KV event ids: rebuild its index from a snapshot."""
        inst = self.instances.get(key[0])
        if inst is not None:
            self.router.resync_instance(key, [b for b in inst.engine.kv_snapshot() if b.dp_rank == key[1]])

    def remove(self, worker_id: int) -> Instance | None:
        inst = self.instances.pop(worker_id, None)
        if inst is not None:
            inst.engine.set_kv_event_sink(None)
            for key in inst.keys():
                self.router.remove_instance(key)
        return inst

    def serving_instances(self) -> list[Instance]:
        """The instances this pool routes to (all of them; an adapter's pool: its replica set)."""
        return list(self.instances.values())

    def ready_instances(self) -> list[Instance]:
        now = time.monotonic()
        return [i for i in self.instances.values() if i.usable(now)]

    def card(self) -> ModelCard | None:
        for inst in self.instances.values():
            return inst.card
        return None

    # --- dispatch --------------------------------------------------------------------------
    def _candidates(self, worker_id: int | None, dp_rank: int | None) -> list[Instance]:
        """Instances a request may go to, healthy or not: its pinned instance, else every non-prefill one."""
        if worker_id is not None:
            inst = self.instances.get(worker_id)
            if inst is None:
                raise InvalidRequest(f"unknown backend_instance_id {worker_id}; known: "
                               f"{sorted(self.instances)}", param="nvext.backend_instance_id")
            if dp_rank is not None and dp_rank >= inst.card.dp_size:
                raise InvalidRequest(f"dp_rank {dp_rank} out of range for instance {worker_id} "
                               f"(dp size {inst.card.dp_size})", param="nvext.dp_rank")
            return [inst]
        return [i for i in self.instances.values() if i.role != "prefill"]

    def _allowed(self, worker_id: int | None, dp_rank: int | None,
                 n: int) -> tuple[InstanceKey | None, list[InstanceKey]]:
        """The pinned key (if one) and the keys a request may be routed to now: usable, and able to hold a
        prompt of n tokens."""
        candidates = self._candidates(worker_id, dp_rank)
        if worker_id is not None:
            inst = candidates[0]
            if not inst.fits(n):
                return None, []
            keys = [(inst.worker_id, dp_rank)] if dp_rank is not None else inst.keys()
            return (keys[0] if len(keys) == 1 else None), keys
        now = time.monotonic()
        rank = dp_rank
        if rank is not None and candidates and not any(rank < i.card.dp_size for i in candidates):
            raise InvalidRequest(f"no instance has dp_rank {rank}", param="nvext.dp_rank")
        return None, [k for i in candidates if i.usable(now) and i.fits(n) for k in i.keys()
                      if rank is None or k[1] == rank]

    def check_fits(self, num_tokens: int, worker_id: int | None = None) -> None:
        """ContextLengthExceeded when no instance that could serve the request (worker_id's, else any non-prefill
        one, healthy or not) has the KV blocks to hold a prompt of num_tokens; passes when capacity is unknown."""
        if worker_id is not None:
            inst = self.instances.get(worker_id)
            candidates = [inst] if inst is not None else []
        else:
            candidates = [i for i in self.instances.values() if i.role != "prefill"]
        if not candidates or any(i.fits(num_tokens) for i in candidates):
            return
        best = max(candidates, key=lambda i: (i.card.total_kv_blocks or 0) * i.card.block_size)
        bs = best.card.block_size
        raise ContextLengthExceeded(f"the prompt of {num_tokens} tokens needs {kv_blocks_needed(num_tokens, bs)} KV blocks "
                       f"of {bs} tokens but the largest instance holds {best.card.total_kv_blocks}; "
                       f"shorten the prompt", param="messages")

    def preflight(self, req: EngineRequest | EmbeddingRequest | MediaRequest) -> None:
        """Fail fast, before a response starts: unknown pin or a prompt no instance can hold (400), or no
        ready instance (503). An embedding batch must fit input by input."""
        n = _fit_tokens(req)
        self.check_fits(n, req.worker_id)
        _, allowed = self._allowed(req.worker_id, req.dp_rank, n)
        if not allowed:
            raise NoReadyInstance(f"no ready instance of model '{self.model}'")

    async def _select(self, req: EngineRequest | EmbeddingRequest | MediaRequest):
        deadline = None if self.queue_timeout is None else time.monotonic() + self.queue_timeout
        queued = False
        hashes, isl, fit, expected = _route_shape(req)
        try:
            while True:
                pinned, allowed = self._allowed(req.worker_id, req.dp_rank, fit)
                if not allowed:
                    self.check_fits(fit, req.worker_id)  # a 400 if it is the prompt, not the pool
                    raise NoReadyInstance(f"no ready instance of model '{self.model}'")
                try:
                    sel = self.router.select(req.request_id, hashes, isl, pinned=pinned, allowed=allowed,
                                             expected_output_tokens=expected)
                except NoInstance as exc:
                    raise NoReadyInstance(str(exc)) from None
                if sel is not None:
                    return sel
                if not queued:
                    queued = True
                    self._queue_delta(1)
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                if timeout == 0.0:
                    raise QueueTimeout("all instances are busy; try again later")
                try:
                    await asyncio.wait_for(self.router.wait_for_capacity(), timeout=min(timeout or 1.0, 1.0))
                except asyncio.TimeoutError:
                    pass
        finally:
            if queued:
                self._queue_delta(-1)

    def _queue_delta(self, d: int) -> None:
        self.queued += d
        if self.metrics is not None:
            self.metrics.model(self.model).queued.inc(d)

    async def generate(self, req: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream outputs, re-dispatching (prompt + tokens so far) on a retryable failure up to migration_limit.

        req is never modified: each attempt sends its own copy, with the dp rank chosen for it and the
        priority in that engine's convention."""
        attempts = 0
        generated: list[int] = []
        keep = self.migration_limit > 0  # only a migration re-sends the tokens so far
        track = self.router.active.track_output_blocks  # decided once: no per-token call when off
        router = self.router
        rid = req.request_id
        current = req  # what the next attempt sends, before its per-instance fields
        if any(i.role == "prefill" for i in self.instances.values()):
            handoff = await self._prefill_remotely(req)
            if handoff is not None:
                head, decode = handoff
                if head is not None:
                    generated.extend(head.token_ids)
                    yield head
                if decode is None:  # the first token ended the request
                    return
                current = decode
        while True:
            inst, sel, sent = await self._route(current, req.priority)
            router.on_dispatch(rid, sel, len(sent.token_ids))
            first = True
            error: str | None = None
            try:
                async for out in inst.engine.generate(sent):
                    if out.finish_reason == "error":
                        error = out.error or "engine error"
                        break
                    toks = out.token_ids
                    if toks:
                        if first:
                            first = False
                            router.on_first_token(rid)
                        if track:
                            router.on_tokens(rid, len(toks))
                        if keep:
                            generated.extend(toks)
                    yield out
                    if out.finish_reason is not None:
                        inst.consecutive_failures = 0
                        return
                if error is None:
                    error = "engine stream ended without a finish reason"
            except EngineError as exc:
                if not exc.retryable:  # the request's own fault: no other instance would do better
                    raise
                error = str(exc)
            finally:
                router.on_finish(rid)
            attempts = self._retry_or_raise(inst, attempts, error, f"request {rid}", "migrating")
            current = self._continuation(req, generated)

    async def embed(self, req: EmbeddingRequest) -> EmbeddingOutput:
        """Embed one batch on a routed instance; a retryable failure re-sends the whole batch to another
        instance (embeddings are cheap to recompute), up to migration_limit times. req is never modified."""
        attempts = 0
        router = self.router
        rid = req.request_id
        current = req
        while True:
            inst, sel, sent = await self._route(current, req.priority)
            try:
                out = await inst.engine.embed(sent)
            except EngineError as exc:
                if not exc.retryable:  # the request's own fault: no other instance would do better
                    raise
                error = str(exc)
            else:
                _check_embeddings(out, req, inst)
                inst.consecutive_failures = 0
                return out
            finally:
                router.on_finish(rid)
            attempts = self._retry_or_raise(inst, attempts, error, f"embedding request {rid}", "retrying")
            # A pin cannot survive the failure of the pinned instance (as for a migrated generation).
            current = replace(req, worker_id=None, dp_rank=req.dp_rank if req.worker_id is None else None)

    async def generate_media(self, req: MediaRequest) -> AsyncIterator[MediaProgress | MediaOutput]:
        """Progress, then the output, from a routed generator instance. A retryable failure before any progress
        re-sends the request to another instance (up to migration_limit times); after progress it ends the
        request (the work is lost either way, and the client has waited through it once). req is never
        modified."""
        attempts = 0
        router = self.router
        rid = req.request_id
        current = req
        while True:
            inst, _, sent = await self._route(current, req.priority)
            progressed = False
            it = inst.engine.generate_media(sent)
            try:
                async for item in it:
                    if type(item) is MediaOutput:
                        _check_media(item, req, inst)
                        inst.consecutive_failures = 0
                        yield item
                        return
                    progressed = True
                    yield item
                error = "the generator ended without an output"
            except EngineError as exc:
                if not exc.retryable or progressed:
                    if exc.retryable:
                        self._record_failure(inst)
                    raise
                error = str(exc)
            finally:
                await it.aclose()
                router.on_finish(rid)
            attempts = self._retry_or_raise(inst, attempts, error, f"media request {rid}", "retrying")
            current = replace(req, worker_id=None, dp_rank=req.dp_rank if req.worker_id is None else None)

    async def _prefill_remotely(self, req: EngineRequest) -> tuple[EngineOutput | None, EngineRequest | None] | None:
        """Disaggregation: run the prompt on a prefill instance; returns its first output (None when the decode
        instance computes the first token itself) and the decode request that pulls the prompt's KV from it, or
        None to prefill on the decode instance instead (counted as a local-prefill fallback when a prefill instance
        was picked and failed or timed out)."""
        if req.stop.max_tokens <= 1 or req.worker_id is not None or req.resumed_output_tokens:
            return None
        now = time.monotonic()
        n = len(req.token_ids)
        usable = [i for i in self.instances.values() if i.usable(now) and i.fits(n)]
        prefill = [k for i in usable if i.role == "prefill" for k in i.keys()]
        decode = [k for i in usable if i.role != "prefill" for k in i.keys()]
        if not prefill or not decode:
            return None
        bs = self.router.block_size
        hashes = req.block_hashes if req.block_hashes is not None else block_hashes(
            req.token_ids, bs, seed=lora_seed(req.lora_name))
        if self.conditional_disagg:
            overlaps = self.router.find_matches(hashes)
            cached = max((overlaps.get(k, 0) for k in decode), default=0) * bs
            if n - cached < self.disagg_min_prefill_tokens:
                return None
        try:
            sel = self.router.select(req.request_id, hashes, n, allowed=prefill)
        except NoInstance:
            return None
        if sel is None:  # every prefill instance is busy: prefill on the decode instance
            return None
        inst = self.instances[sel.key[0]]
        key = f"{req.request_id}/{req.choice_index}"
        preq = replace(req, stop=replace(req.stop, max_tokens=1, min_tokens=min(1, req.stop.min_tokens)),
                       kv_export_key=key, dp_rank=sel.key[1], priority=engine_priority(inst.card, req.priority))
        try:
            first = await asyncio.wait_for(self._run_prefill(inst, preq), self.disagg_prefill_timeout or None)
        except asyncio.TimeoutError:
            first = None
            log.warning("request %s: prefill on instance %s timed out after %.1fs; prefilling on decode",
                        req.request_id, inst.worker_id, self.disagg_prefill_timeout)
            self._record_failure(inst)
            self._count_fallback("timeout")
        finally:
            self.router.on_finish(req.request_id)
        if first is None:
            return None
        inst.consecutive_failures = 0
        transfer = first.kv_transfer
        if transfer is not None and transfer.first_token_on_decode:
            # The decode instance computes the first token from the pulled prompt KV; the prefill's is dropped.
            self._count_remote_prefill()
            return None, self._continuation(req, [], kv_transfer=transfer)
        if first.finish_reason != "length":  # a stop token ended it at the first token
            return first, None
        first.finish_reason = None
        first.kv_transfer = None
        if transfer is None:
            endpoint = inst.card.kv_endpoint
            transfer = None if endpoint is None else KvTransferParams(endpoint, key, n // bs)
        if transfer is not None:
            self._count_remote_prefill()
        return first, self._continuation(req, first.token_ids, kv_transfer=transfer)

    async def _run_prefill(self, inst: Instance, preq: EngineRequest) -> EngineOutput | None:
        """The prefill request's outputs merged into one (its first token, usage, kv_transfer); None (counted as a
        fallback) when the instance failed it or its stream ended without finishing."""
        first = EngineOutput()
        try:
            async for out in inst.engine.generate(preq):
                if out.finish_reason == "error":
                    log.warning("request %s: prefill on instance %s failed (%s); prefilling on decode",
                                preq.request_id, inst.worker_id, out.error)
                    self._record_failure(inst)
                    self._count_fallback("error")
                    return None
                first.token_ids.extend(out.token_ids)
                if out.logprobs:
                    first.logprobs = (first.logprobs or []) + out.logprobs
                for name in ("prompt_tokens", "cached_tokens", "stop_token_id", "kv_transfer"):
                    if getattr(out, name) is not None:
                        setattr(first, name, getattr(out, name))
                if out.finish_reason is not None:
                    first.finish_reason = out.finish_reason
                    return first
        except EngineError as exc:
            log.warning("request %s: prefill on instance %s failed (%s); prefilling on decode",
                        preq.request_id, inst.worker_id, exc)
            if exc.retryable:
                self._record_failure(inst)
            self._count_fallback("error")
            return None
        self._count_fallback("error")  # the stream ended without finishing: the decode instance prefills
        return None

    def _count_remote_prefill(self) -> None:
        if self.metrics is not None:
            self.metrics.remote_prefills.labels(self.model).inc()

    def _count_fallback(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.prefill_fallbacks.labels(self.model, reason).inc()

    def _continuation(self, original: EngineRequest, generated: list[int], *,
                      kv_transfer: KvTransferParams | None = None) -> EngineRequest:
        """original resumed after `generated` output tokens (a migration, or decode after remote prefill)."""
        k = len(generated)
        stop = replace(original.stop, max_tokens=max(1, original.stop.max_tokens - k),
                       min_tokens=max(0, original.stop.min_tokens - k))
        token_ids = original.token_ids + generated
        # A pin cannot survive the failure of the pinned instance: the retry goes wherever the router says.
        # A client's dp_rank alone (any instance's rank r) still holds; with a worker pin it meant that worker's.
        dp_rank = original.dp_rank if original.worker_id is None else None
        return replace(original, token_ids=token_ids, stop=stop,
                       resumed_output_tokens=original.resumed_output_tokens + k, worker_id=None,
                       dp_rank=dp_rank, block_hashes=block_hashes(token_ids, self.router.block_size,
                                                                  seed=lora_seed(original.lora_name)),
                       kv_export_key=None, kv_transfer=kv_transfer)

    async def _route(self, current, priority: int) -> tuple[Instance, Any, Any]:
        """The instance an attempt goes to, its Selection, and the request it is sent: a copy of `current` with
        the chosen dp rank and the API priority in that engine's convention."""
        while True:
            sel = await self._select(current)
            inst = self.instances.get(sel.key[0])
            if inst is not None:
                return inst, sel, replace(current, dp_rank=sel.key[1], priority=engine_priority(inst.card, priority))
            self.router.on_finish(current.request_id)  # removed between select and dispatch

    def _retry_or_raise(self, inst: Instance, attempts: int, error: str, what: str, action: str) -> int:
        """After an instance failed a request: count it against the instance, then either raise (retries used
        up) or count a migration and return the next attempt number."""
        self._record_failure(inst)
        if attempts >= self.migration_limit:
            raise EngineError(f"instance {inst.worker_id} failed: {error}")
        attempts += 1
        if self.metrics is not None:
            self.metrics.model(self.model).migrations.inc()
        log.warning("%s: instance %s failed (%s); %s (%d/%d)",
                    what, inst.worker_id, error, action, attempts, self.migration_limit)
        return attempts

    def _record_failure(self, inst: Instance) -> None:
        inst.consecutive_failures += 1
        if inst.consecutive_failures >= self.FAILURE_THRESHOLD:
            inst.disabled_until = time.monotonic() + self.FAILURE_COOLDOWN_S
            inst.consecutive_failures = 0
            log.warning("instance %s of %s taken out of routing for %.1fs after repeated failures",
                        inst.worker_id, self.model, self.FAILURE_COOLDOWN_S)
