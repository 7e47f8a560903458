"""One /metrics over all processes: the core's own families plus each HTTP process's, samples with the same
name and labels summed (counters, histogram buckets and in-flight gauges all add up across processes)."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from dynamo_mono.frontend_procs.messages import MetricFamily


def families_of(registry: CollectorRegistry) -> list[MetricFamily]:
    """A registry's families in wire form."""
    return [MetricFamily(f.name, f.type, f.documentation, [(s.name, dict(s.labels), float(s.value))
                                                           for s in f.samples])
            for f in registry.collect()]


class _Merged:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def merged_exposition(own: CollectorRegistry, peers: list[list[MetricFamily]]) -> bytes:
    """The text exposition of `own` with every peer's samples added in."""
    order: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple, float]] = {}
    for fam in [families_of(own), *peers]:
        for f in fam:
            if f.name not in order:
                order[f.name] = (f.type, f.documentation)
                values[f.name] = {}
            acc = values[f.name]
            for name, labels, value in f.samples:
                key = (name, tuple(sorted(labels.items())))
                acc[key] = acc.get(key, 0.0) + value
    out = []
    for name, (typ, doc) in order.items():
        m = Metric(name, doc, typ)
        for (sname, labels), value in values[name].items():
            m.add_sample(sname, dict(labels), value)
        out.append(m)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(out))
    return generate_latest(registry)
