"""A vLLM stat logger that keeps the latest scheduler stats per engine (dp rank) for load_metrics()."""

from __future__ import annotations

from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase


class LoadRecorder:
    """Latest running / waiting / KV usage / prefix-hit counters per dp rank; shared by the stat loggers."""

    def __init__(self, dp_size: int) -> None:
        self.running = [0] * dp_size
        self.waiting = [0] * dp_size
        self.kv_usage = [0.0] * dp_size
        self.hit_tokens = [0] * dp_size
        self.query_tokens = [0] * dp_size
        self.preemptions = [0] * dp_size
        # vLLM's multimodal processor cache (--mm-processor-cache-gb, keyed by media uuid), all ranks: items looked
        # up and found (a hit skips the HF processor; the vision encoder still runs).
        self.mm_queries = 0
        self.mm_hits = 0
        # Disaggregation (all ranks): KV bytes read from prefill instances, reads that failed (recomputed).
        self.kv_bytes = 0
        self.kv_failures = 0

    def factory(self) -> Any:
        """A StatLoggerFactory for AsyncLLM(stat_loggers=[...]) that records into this object."""
        recorder = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                self.engine_index = engine_index

            def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                       engine_idx: int = 0) -> None:
                recorder.record(scheduler_stats, iteration_stats, engine_idx)
                if mm_cache_stats is not None:
                    recorder.mm_queries += mm_cache_stats.queries
                    recorder.mm_hits += mm_cache_stats.hits

            def log_engine_initialized(self) -> None:
                pass

        return _Logger

    def record(self, sched: Any, it: Any, rank: int) -> None:
        if not 0 <= rank < len(self.running):
            rank = 0
        if sched is not None:
            self.running[rank] = sched.num_running_reqs
            self.waiting[rank] = sched.num_waiting_reqs
            self.kv_usage[rank] = sched.kv_cache_usage
            pcs = sched.prefix_cache_stats
            if pcs is not None:
                self.hit_tokens[rank] += pcs.hits
                self.query_tokens[rank] += pcs.queries
            kvc = getattr(sched, "kv_connector_stats", None)
            if kvc:
                from dynamo_mono_vllm.disagg import connector_counts

                moved, failed = connector_counts(kvc)
                self.kv_bytes += moved
                self.kv_failures += failed
        if it is not None:
            self.preemptions[rank] += getattr(it, "num_preempted_reqs", 0) or 0
