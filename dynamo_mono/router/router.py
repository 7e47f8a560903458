"""The router: picks the engine instance for each request (kv / round-robin / random / direct) and tracks load.

Lifecycle of a request: `select()` chooses an instance AND starts tracking the request on it (so two
selections made before either dispatch see each other's load); `on_first_token()` when prefill is
done, `on_tokens()` per engine step (only does work with --router-track-output-blocks), and
`on_finish()` exactly when the request ends, is aborted, fails, or is not dispatched after all.
`on_dispatch()` is only needed to track a request routed without `select()`.

Pinned requests (`pinned=(worker_id, dp_rank)`) go to that instance in every mode and skip the busy
thresholds: a pin is an explicit instruction. Other requests skip busy instances, and `select()`
returns None when every allowed instance is busy; the caller awaits `wait_for_capacity()` and retries.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from time import perf_counter
from typing import Awaitable, Callable, Collection

from prometheus_client import CollectorRegistry

from dynamo_mono.config import Settings
from dynamo_mono.engine import InstanceKey
from dynamo_mono.kv_events import KvEventBatch
from dynamo_mono.router.approx import ApproxIndexer
from dynamo_mono.router.indexer import KvIndexer
from dynamo_mono.router.load import ActiveLoad
from dynamo_mono.router.metrics import RouterMetrics
from dynamo_mono.router.selector import KvSelector


class NoInstance(Exception):
    """Nothing to route to, or the pinned instance is unknown."""


@dataclass(slots=True)
class Selection:
    """Where a request goes and how much of its prompt is cached there."""

    key: InstanceKey
    overlap_blocks: int
    prompt_blocks: int
    block_hashes: list[int] = field(default_factory=list, repr=False)
    expected_output_tokens: int = 0  # the client's output-length hint: blocks reserved up front


class Router:
    """Per-model router over engine instances addressed by (worker_id, dp_rank)."""

    def __init__(self, settings: Settings, *, block_size: int, registry: CollectorRegistry, model: str = "",
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.mode: str = settings.router_mode
        self.block_size = block_size
        self.model = model
        self.use_kv_events: bool = settings.router_kv_events
        self._kv = self.mode == "kv"
        self.rng = rng or random.Random()
        self.indexer = KvIndexer(block_size, on_gap=self._on_gap,
                                 host_weight=settings.router_kv_host_overlap_weight,
                                 disk_weight=settings.router_kv_disk_overlap_weight)
        self.approx = ApproxIndexer(settings.router_ttl_secs, settings.router_max_tree_size,
                                    settings.router_prune_target_ratio, clock=clock)
        self.active = ActiveLoad(
            block_size,
            assume_kv_reuse=settings.router_assume_kv_reuse,
            track_blocks=settings.router_track_active_blocks,
            track_output_blocks=settings.router_track_output_blocks,
            decode_blocks_threshold=settings.active_decode_blocks_threshold,
            prefill_tokens_threshold=settings.active_prefill_tokens_threshold,
            prefill_tokens_threshold_frac=settings.active_prefill_tokens_threshold_frac,
        )
        self.selector = KvSelector(block_size, settings.router_kv_overlap_score_weight,
                                   settings.router_temperature, self.rng)
        self.metrics = RouterMetrics(registry, model, lambda: self.active.loads,
                                     indexed=lambda: self.indexer.core.held_counts())
        self._instances: dict[InstanceKey, bool] = {}  # key -> predicted (approximate) cache state
        self._keys: tuple[InstanceKey, ...] = ()  # join order, for round-robin and cheap iteration
        self._pos: dict[InstanceKey, int] = {}  # key -> index in _keys
        self._loads: list = []  # InstanceLoad of each of _keys
        self._n_predicted = 0
        self._rr = 0
        self._waiters: list[asyncio.Future] = []
        # Instances whose event stream had a gap; on_resync(key) is called once per gap so the
        # owner can fetch engine.kv_snapshot() and call resync_instance(key, snapshot).
        self.resync_needed: set[InstanceKey] = set()
        self.on_resync: Callable[[InstanceKey], None] | None = None

    # --- instances ------------------------------------------------------------------------
    def adopt_block_size(self, block_size: int) -> None:
        """Take the block size of the first instance to join (the router owns it for the model); a different
        size while instances are known is refused, since block hashes would not line up."""
        if block_size == self.block_size:
            return
        if self._instances:
            raise ValueError(f"block size {block_size} differs from the {self.block_size} of the model's other "
                             f"instances; start every instance of a model with the same block size")
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.block_size = block_size
        self.indexer.block_size = block_size
        self.active.block_size = block_size
        self.selector.block_size = block_size

    def add_instance(self, key: InstanceKey, snapshot: list[KvEventBatch] | None = None, *,
                     total_blocks: int | None = None, max_num_batched_tokens: int | None = None,
                     kv_events: bool | None = None) -> None:
        """Make key routable (idempotent). kv_events=False: its engine publishes no KV events, so its
        cache is predicted from routing decisions; total_blocks / max_num_batched_tokens enable the
        busy thresholds that need them."""
        known = self._instances.get(key)
        if kv_events is None and known is not None:
            predicted = known
        else:
            predicted = (not self.use_kv_events) or kv_events is False
        if known is not None and known != predicted:
            self.remove_instance(key)
            known = None
        if known is None:
            self._instances[key] = predicted
            if predicted:
                self._n_predicted += 1
                self.approx.add_instance(key)
            else:
                self.indexer.add_instance(key)
        if snapshot is not None and not predicted:
            self.resync_instance(key, snapshot)
        self.active.add_instance(key, total_blocks, max_num_batched_tokens)
        self._reindex()
        self._notify()

    def remove_instance(self, key: InstanceKey) -> None:
        """Forget key: its index entries, load, tracked requests and metric series (idempotent)."""
        predicted = self._instances.pop(key, None)
        if predicted is None:
            return
        if predicted:
            self._n_predicted -= 1
            self.approx.remove_instance(key)
        else:
            self.indexer.remove_instance(key)
        self.active.remove_instance(key)
        self.metrics.remove_instance(key)
        self.resync_needed.discard(key)
        self._reindex()
        self._notify()  # queued requests retry and learn if nothing is left

    def _reindex(self) -> None:
        self._keys = tuple(self._instances)
        self._pos = {k: i for i, k in enumerate(self._keys)}
        self._loads = [self.active.loads[k] for k in self._keys]

    def resync_instance(self, key: InstanceKey, snapshot: list[KvEventBatch]) -> None:
        """Replace key's indexed blocks by a snapshot (BlockStored batches) of its cache now."""
        self.indexer.resync(key, snapshot)
        self.resync_needed.discard(key)

    def instances(self) -> list[InstanceKey]:
        return list(self._instances)

    def on_kv_events(self, batch: KvEventBatch) -> None:
        """Index one engine step's KV events; ignored outside kv mode and for unknown instances."""
        if self._kv:
            self.indexer.apply(batch)

    def _on_gap(self, key: InstanceKey) -> None:
        if key in self.resync_needed:
            return
        self.resync_needed.add(key)
        if self.on_resync is not None:
            self.on_resync(key)

    # --- routing --------------------------------------------------------------------------
    def select(self, request_id: str, block_hashes: list[int], num_tokens: int, *,
               pinned: InstanceKey | None = None, allowed: Collection[InstanceKey] | None = None,
               expected_output_tokens: int = 0) -> Selection | None:
        """Choose an instance and start tracking the request there; None when all allowed are busy."""
        t0 = perf_counter()
        instances = self._instances
        if not instances:
            raise NoInstance("no engine instances are available")
        if pinned is not None:
            if pinned not in instances or (allowed is not None and pinned not in allowed):
                raise NoInstance(f"instance worker_id={pinned[0]} dp_rank={pinned[1]} is not available")
            candidates = [pinned]
        else:
            if self.mode == "direct":
                raise NoInstance("router mode 'direct' needs each request to name its instance "
                                 "(worker_id and dp_rank)")
            if allowed is None:
                candidates = self._keys
            else:
                if not isinstance(allowed, (set, frozenset, dict)):
                    allowed = set(allowed)
                candidates = [k for k in self._keys if k in allowed]
                if not candidates:
                    raise NoInstance("no engine instance matches the requested worker_id / dp_rank")
                if len(candidates) == len(self._keys):
                    candidates = self._keys  # all allowed: use the precomputed load list
            if self.active.has_thresholds:
                busy = self.active.is_busy
                candidates = [k for k in candidates if not busy(k)]
                if not candidates:
                    return None
        metrics = self.metrics
        if self._kv:
            inflight: dict[InstanceKey, int] = {}
            overlaps = self._find_matches(block_hashes, inflight)
            t1 = perf_counter()
            metrics.find_matches.observe((t1 - t0) * 1e3)
            if candidates is self._keys:
                key = self.selector.pick(candidates, self._loads, overlaps, num_tokens, self._pos, inflight)
            else:
                key = self.selector.pick(candidates, list(map(self.active.loads.__getitem__, candidates)),
                                         overlaps, num_tokens, None, inflight)
            if overlaps:
                metrics.count_decision(overlaps.get(key, 0), max(overlaps.values()))
        else:
            overlaps = {}
            t1 = t0
            if len(candidates) == 1:
                key = candidates[0]
            elif self.mode == "round-robin":
                key = candidates[self._rr % len(candidates)]
                self._rr += 1
            else:
                key = self.rng.choice(candidates)
        # int(): host / disk overlap is weighted (fractional); load counters stay in whole blocks
        sel = Selection(key, int(overlaps.get(key, 0)), len(block_hashes), block_hashes, expected_output_tokens)
        self.on_dispatch(request_id, sel, num_tokens)
        metrics.count_request(key)
        if sel.prompt_blocks:
            metrics.hit_rate.observe(sel.overlap_blocks / sel.prompt_blocks)
        t2 = perf_counter()
        metrics.scheduling.observe((t2 - t1) * 1e3)
        metrics.total.observe((t2 - t0) * 1e3)
        return sel

    def _find_matches(self, block_hashes: list[int],
                      inflight: dict[InstanceKey, int] | None = None) -> dict[InstanceKey, int]:
        n_pred = self._n_predicted
        if not n_pred:
            found = self.indexer.find_matches(block_hashes)
        else:
            predicted = self.approx.find_matches(block_hashes)
            if n_pred == len(self._instances):
                found = predicted
            else:
                found = self.indexer.find_matches(block_hashes)
                found.update(predicted)  # the two indexes hold disjoint instances
        if block_hashes:
            self._add_inflight_matches(block_hashes, found, inflight)
        return found

    def _add_inflight_matches(self, block_hashes: list[int], found: dict[InstanceKey, int],
                              inflight: dict[InstanceKey, int] | None = None) -> None:
        """Count prompt blocks that requests already routed to an instance are computing there.

        KV events only report blocks once their prefill ran, so without this a burst of requests sharing
        a new prefix would be spread over instances (each seeing no overlap anywhere) and every one of
        them would prefill it again. The blocks matched beyond the index go to `inflight` (the selector
        does not count them as queue added, see selector.py). Active prompts are tracked per instance as
        reference-counted block hashes (--router-assume-kv-reuse), so the walk is a few dict lookups per
        instance.
        """
        first = block_hashes[0]
        for key, load in self.active.loads.items():
            shared = load.shared
            if not shared or first not in shared:
                continue
            n = 1
            for h in block_hashes[1:]:
                if h not in shared:
                    break
                n += 1
            indexed = found.get(key, 0)
            if n > indexed:
                found[key] = n
                if inflight is not None:  # blocks not cached yet: still being computed there
                    inflight[key] = n - indexed

    def find_matches(self, block_hashes: list[int]) -> dict[InstanceKey, int]:
        """Leading prompt blocks cached per instance (kv mode; empty otherwise)."""
        return self._find_matches(block_hashes) if self._kv else {}

    def observe_block_hashing_ms(self, ms: float) -> None:
        """Record the caller's block-hashing time for one request."""
        self.metrics.block_hashing.observe(ms)

    # --- request lifecycle ----------------------------------------------------------------
    def on_dispatch(self, request_id: str, sel: Selection, num_tokens: int) -> None:
        """Track a request on sel.key; a no-op after select() chose sel.key, a move if tracked elsewhere."""
        predicted = self._instances.get(sel.key)
        if predicted is None:
            raise NoInstance(f"instance worker_id={sel.key[0]} dp_rank={sel.key[1]} is not available")
        if self.active.tracked(request_id) == sel.key:
            return  # already tracked there by select()
        self.active.start(request_id, sel.key, sel.block_hashes, num_tokens, sel.overlap_blocks,
                          sel.expected_output_tokens)
        if predicted and self._kv:
            self.approx.record(sel.key, sel.block_hashes)

    def on_first_token(self, request_id: str) -> None:
        if self.active.first_token(request_id) and self._waiters:
            self._notify()

    def on_tokens(self, request_id: str, n: int) -> None:
        self.active.tokens(request_id, n)

    def on_finish(self, request_id: str) -> None:
        if self.active.finish(request_id) is not None:
            self._notify()

    def load(self) -> dict[InstanceKey, dict]:
        """Per instance: active_prefill_tokens, active_decode_blocks, active_requests, total_blocks."""
        return self.active.snapshot()

    def is_busy(self, key: InstanceKey) -> bool:
        return key in self.active.loads and self.active.is_busy(key)

    # --- queueing -------------------------------------------------------------------------
    def wait_for_capacity(self) -> Awaitable[None]:
        """A future resolved at the next load drop (finish, prefill done) or instance change."""
        fut = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if len(waiters) > 64:
            waiters[:] = [w for w in waiters if not w.done()]
        waiters.append(fut)
        return fut

    def _notify(self) -> None:
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        """Stop exporting this router's metrics."""
        self.metrics.close()
