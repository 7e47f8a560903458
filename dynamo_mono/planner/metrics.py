"""The planner's Prometheus gauges (`dynamo_planner_*`), on the server's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

METRIC_NAMES: tuple[str, ...] = (
    "dynamo_planner_instances",
    "dynamo_planner_target_instances",
    "dynamo_planner_predicted_requests",
    "dynamo_planner_predicted_isl",
    "dynamo_planner_predicted_osl",
    "dynamo_planner_observed_ttft_ms",
    "dynamo_planner_observed_itl_ms",
)


class PlannerMetrics:
    """Gauges of one planned model: instances per role (running and target), the predicted load of the next
    interval and the latencies observed in the last one."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        n = iter(METRIC_NAMES)
        self.model = model
        self._instances = Gauge(next(n), "Engine instances serving, per role", ["model", "role"], registry=registry)
        self._target = Gauge(next(n), "Engine instances the planner wants, per role", ["model", "role"],
                             registry=registry)
        self.predicted_requests = Gauge(next(n), "Requests predicted for the next adjustment interval", ["model"],
                                        registry=registry).labels(model)
        self.predicted_isl = Gauge(next(n), "Mean prompt tokens predicted for the next interval", ["model"],
                                   registry=registry).labels(model)
        self.predicted_osl = Gauge(next(n), "Mean output tokens predicted for the next interval", ["model"],
                                   registry=registry).labels(model)
        self.observed_ttft_ms = Gauge(next(n), "Mean time to first token over the last interval, ms", ["model"],
                                      registry=registry).labels(model)
        self.observed_itl_ms = Gauge(next(n), "Mean inter-token latency over the last interval, ms", ["model"],
                                     registry=registry).labels(model)

    def instances(self, role: str, n: int) -> None:
        self._instances.labels(self.model, role).set(n)

    def target(self, role: str, n: int) -> None:
        self._target.labels(self.model, role).set(n)
