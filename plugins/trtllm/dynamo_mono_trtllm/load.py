"""Keeps TensorRT-LLM's latest iteration stats (LLM.get_stats_async) and turns them into LoadMetrics."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import LoadMetrics


class StatsRecorder:
    """Latest IterationStats dict plus our own count of requests in flight per dp rank.

    TensorRT-LLM's iteration stats are instance-wide; with attention DP (dp ranks > 1) each rank reports the
    requests this plugin has in flight on it and the instance's used KV blocks in proportion to them. An idle engine runs no
    iterations, so before the first stats the KV size is the configured one (`--kv-cache-max-tokens`, per rank)
    when known."""

    def __init__(self, dp_size: int, configured_blocks: int = 0) -> None:
        self.dp_size = dp_size
        self.configured_blocks = configured_blocks
        self.latest: dict[str, Any] | None = None
        self.iterations = 0
        self.in_flight = [0] * dp_size

    def record(self, stat: Any) -> None:
        if isinstance(stat, dict):
            self.latest = stat
            self.iterations += 1

    def metrics(self) -> list[LoadMetrics]:
        st = self.latest or {}
        kv = st.get("kvCacheStats") or {}
        ifb = st.get("inflightBatchingStats") or {}
        total = int(kv.get("maxNumBlocks", 0) or 0) or self.configured_blocks * self.dp_size
        used = int(kv.get("usedNumBlocks", max(0, total - int(kv.get("freeNumBlocks", total) or 0))) or 0)
        hit = float(kv.get("cacheHitRate", 0.0) or 0.0)
        running = int(st.get("numActiveRequests", 0) or 0)
        waiting = int(st.get("numQueuedRequests", 0) or 0) + int(ifb.get("numPausedRequests", 0) or 0)
        flying = sum(self.in_flight)
        if self.dp_size == 1:
            # A cancelled request leaves at once; the stats only say so after the engine's next iteration.
            running = min(running, flying)
            waiting = min(waiting, max(0, flying - running))
            return [LoadMetrics(dp_rank=0, running=running, waiting=waiting, kv_active_blocks=used,
                                kv_total_blocks=total, prefix_hit_rate=hit)]
        share_total = total // self.dp_size
        return [LoadMetrics(dp_rank=r, running=self.in_flight[r], waiting=0, kv_active_blocks=u,
                            kv_total_blocks=share_total, prefix_hit_rate=hit)
                for r, u in enumerate(self._split_used(used if flying else 0, flying))]

    def _split_used(self, used: int, flying: int) -> list[int]:
        """The instance's used blocks shared out in proportion to each rank's requests in flight (largest
        remainders first), so a rank running a request never reads as holding no KV."""
        if not used or not flying:
            return [0] * self.dp_size
        exact = [used * n / flying for n in self.in_flight]
        parts = [int(x) for x in exact]
        order = sorted(range(self.dp_size), key=lambda r: exact[r] - parts[r], reverse=True)
        for r in order[:used - sum(parts)]:
            parts[r] += 1
        return parts
