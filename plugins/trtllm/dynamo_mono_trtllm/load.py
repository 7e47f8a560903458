"""Keeps TensorRT-LLM's latest iteration stats (LLM.get_stats_async) and turns them into LoadMetrics."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import LoadMetrics


class StatsRecorder:
    """Latest IterationStats dict plus our own count of requests in flight per dp rank.

    TensorRT-LLM's iteration stats are instance-wide; with attention DP (dp ranks > 1) each rank reports the
    requests this plugin has in flight on it and an even share of the instance's KV blocks."""

    def __init__(self, dp_size: int) -> None:
        self.dp_size = dp_size
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
        total = int(kv.get("maxNumBlocks", 0) or 0)
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
        share_used, share_total = used // self.dp_size, total // self.dp_size
        return [LoadMetrics(dp_rank=r, running=self.in_flight[r], waiting=0, kv_active_blocks=share_used,
                            kv_total_blocks=share_total, prefix_hit_rate=hit) for r in range(self.dp_size)]
