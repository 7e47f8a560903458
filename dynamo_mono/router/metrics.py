"""Router Prometheus metrics: plain counters updated per decision, exported by one collector per registry.

Decisions only bump ints and bucket counts (no locks, no label lookups); the registry's collector
turns them into metric families at scrape time. Per-instance series exist only while the instance
is known, so a leaving instance's series disappear. Several routers (one per model) may share a
registry: they share the collector and are told apart by the `model` label.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from dynamo_mono.engine import InstanceKey

OVERHEAD_BUCKETS_MS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0,
                       250.0, 1000.0)
HIT_RATE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

_OVERHEAD = {
    "block_hashing": "Time to compute a request's block hashes (ms)",
    "indexer_find_matches": "Time to find a prompt's cached prefix per instance (ms)",
    "scheduling": "Time to choose an instance once overlaps are known (ms)",
    "total": "Router time per decision: find matches + scheduling (ms)",
}
_LOAD = {
    "active_decode_blocks": "KV blocks held by requests in flight on the instance (router's view)",
    "active_prefill_tokens": "Prompt tokens dispatched to the instance and not yet prefilled",
    "active_requests": "Requests in flight on the instance",
}


class FastHistogram:
    """Cumulative-at-scrape histogram: observe() is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le semantics: value <= bound
        self.total += value

    def buckets(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), list(self.counts)):
            acc += n
            out.append((bound, acc))
        return out


class RouterMetrics:
    """One router's metric state; `loads` returns the live per-instance load objects."""

    def __init__(self, registry: CollectorRegistry, model: str,
                 loads: Callable[[], dict[InstanceKey, object]],
                 indexed: Callable[[], dict[InstanceKey, int]] | None = None) -> None:
        self.model = model
        self.loads = loads
        self.indexed = indexed  # blocks the KV index holds per event-fed instance (at scrape time)
        self.requests: dict[InstanceKey, int] = {}
        self.overlap_lost_decisions = 0  # decisions where load outweighed a longer overlap elsewhere
        self.overlap_lost_blocks = 0  # best overlap - chosen overlap, summed over those decisions
        self.hit_rate = FastHistogram(HIT_RATE_BUCKETS)
        self.overhead = {name: FastHistogram(OVERHEAD_BUCKETS_MS) for name in _OVERHEAD}
        self.block_hashing = self.overhead["block_hashing"]
        self.find_matches = self.overhead["indexer_find_matches"]
        self.scheduling = self.overhead["scheduling"]
        self.total = self.overhead["total"]
        self._collector = _collector_for(registry)
        self._collector.views.add(self)

    def count_request(self, key: InstanceKey) -> None:
        self.requests[key] = self.requests.get(key, 0) + 1

    def count_decision(self, chosen_overlap: int, best_overlap: int) -> None:
        """A kv decision: counts it as a lost reuse when another instance had a longer overlap."""
        if chosen_overlap < best_overlap:
            self.overlap_lost_decisions += 1
            self.overlap_lost_blocks += best_overlap - chosen_overlap

    def remove_instance(self, key: InstanceKey) -> None:
        self.requests.pop(key, None)

    def close(self) -> None:
        """Stop exporting this router's series."""
        self._collector.views.discard(self)


class _RouterCollector:
    """Exports every RouterMetrics registered on one registry."""

    def __init__(self) -> None:
        self.views: weakref.WeakSet[RouterMetrics] = weakref.WeakSet()

    def describe(self) -> Iterator:
        return self._families([])

    def collect(self) -> Iterator:
        return self._families(list(self.views))

    def _families(self, views: list[RouterMetrics]) -> Iterator:
        inst_labels = ["model", "worker_id", "dp_rank"]
        req = CounterMetricFamily("dynamo_component_router_requests_total",
                                  "Requests routed to each instance", labels=inst_labels)
        hit = HistogramMetricFamily("dynamo_component_router_kv_hit_rate",
                                    "Cached fraction of the prompt's blocks on the chosen instance, per decision",
                                    labels=["model"])
        over = {n: HistogramMetricFamily(f"dynamo_router_overhead_{n}_ms", doc, labels=["model"])
                for n, doc in _OVERHEAD.items()}
        load = {n: GaugeMetricFamily(f"dynamo_component_router_{n}", doc, labels=inst_labels)
                for n, doc in _LOAD.items()}
        indexed = GaugeMetricFamily("dynamo_component_router_kv_indexed_blocks",
                                    "KV blocks the router's index holds for the instance (from its KV events)",
                                    labels=inst_labels)
        lost = CounterMetricFamily("dynamo_component_router_overlap_lost_decisions",
                                   "KV decisions where load outweighed a longer cached prefix on another instance",
                                   labels=["model"])
        lost_blocks = CounterMetricFamily("dynamo_component_router_overlap_lost_blocks",
                                          "Best overlap minus chosen overlap (blocks), summed over those decisions",
                                          labels=["model"])
        for v in views:
            lost.add_metric([v.model], v.overlap_lost_decisions)
            lost_blocks.add_metric([v.model], v.overlap_lost_blocks)
            for (wid, rank), n in list(v.requests.items()):
                req.add_metric([v.model, str(wid), str(rank)], n)
            hit.add_metric([v.model], v.hit_rate.buckets(), v.hit_rate.total)
            for name, h in v.overhead.items():
                over[name].add_metric([v.model], h.buckets(), h.total)
            for (wid, rank), ld in list(v.loads().items()):
                labels = [v.model, str(wid), str(rank)]
                load["active_decode_blocks"].add_metric(labels, ld.decode_blocks)  # type: ignore[attr-defined]
                load["active_prefill_tokens"].add_metric(labels, ld.prefill_tokens)  # type: ignore[attr-defined]
                load["active_requests"].add_metric(labels, ld.requests)  # type: ignore[attr-defined]
            if v.indexed is not None:
                for (wid, rank), n in v.indexed().items():
                    indexed.add_metric([v.model, str(wid), str(rank)], n)
        yield req
        yield lost
        yield lost_blocks
        yield hit
        yield from over.values()
        yield from load.values()
        yield indexed


_COLLECTORS: "weakref.WeakKeyDictionary[CollectorRegistry, _RouterCollector]" = weakref.WeakKeyDictionary()


def _collector_for(registry: CollectorRegistry) -> _RouterCollector:
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = _COLLECTORS[registry] = _RouterCollector()
        registry.register(collector)  # type: ignore[arg-type]
    return collector
