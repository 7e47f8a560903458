"""Load estimator: active requests per adapter, sampled, deciding when a replica set grows or shrinks."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """Replica-factor bounds and the hysteresis band (mean active requests per replica over a full window)."""

    base: int  # the factor an adapter starts with and never shrinks below (0 = every instance: no scaling)
    maximum: int  # most replicas (0 = every instance)
    up: float  # grow above this (0 = never grow)
    down: float  # shrink below this
    window: int


class LoadEstimator:
    """Per adapter, the last `window` samples of its active requests; `decide` returns the next factor."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self.samples: dict[str, deque[int]] = {}

    def sample(self, name: str, active: int) -> None:
        q = self.samples.get(name)
        if q is None:
            q = self.samples[name] = deque(maxlen=self.policy.window)
        q.append(active)

    def forget(self, name: str) -> None:
        self.samples.pop(name, None)

    def current(self) -> dict[str, float]:
        """Mean active requests per adapter over its window."""
        return {n: sum(q) / len(q) for n, q in self.samples.items() if q}

    def decide(self, name: str, factor: int, replicas: int, instances: int) -> int:
        """The adapter's next replica factor, given its current factor, the replicas it has and the instances
        there are. It moves by one step, only on a full window, which then starts over (so one burst cannot
        move it twice)."""
        p = self.policy
        q = self.samples.get(name)
        if p.base <= 0 or p.up <= 0 or q is None or len(q) < p.window or replicas == 0:
            return factor
        per_replica = sum(q) / len(q) / replicas
        cap = min(p.maximum or instances, instances)
        if per_replica > p.up and factor < cap:
            q.clear()
            return factor + 1
        if per_replica < p.down and factor > p.base:
            q.clear()
            return factor - 1
        return factor
