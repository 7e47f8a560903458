"""Prometheus metrics of the frontend, with Dynamo's metric names (`dynamo_frontend_*`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

disable_created_metrics()  # no *_created series: they double the scrape size and nobody reads them

_LAT = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOK = (1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
P = "dynamo_frontend_"
# Families with only a "model" label; ModelMetrics binds each once per model.
_PER_MODEL = ("inflight", "queued", "disconnected", "ttft", "itl", "duration", "isl", "osl", "output_tokens",
              "cached_tokens", "tokenize", "template", "migrations", "priority")


class FrontendMetrics:
    """All frontend metric families on one registry (one registry per server, so tests stay isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self._models: dict[str, ModelMetrics] = {}
        self._children: dict[tuple, Any] = {}
        self.requests_total = Counter(P + "requests_total", "Requests handled",
                                      ["model", "endpoint", "request_type", "status", "error_type"], registry=r)
        self.requests_started = Counter(P + "requests_started_total", "Requests started",
                                        ["model", "endpoint"], registry=r)
        self.inflight = Gauge(P + "inflight_requests", "Requests in flight", ["model"], registry=r)
        self.queued = Gauge(P + "queued_requests", "Requests waiting for an instance", ["model"], registry=r)
        # A Gauge only so the exposed name is exactly Dynamo's (a Counter would gain "_total"); it only grows.
        self.disconnected = Gauge(P + "disconnected_clients", "Clients that went away before the end",
                                  ["model"], registry=r)
        self.ttft = Histogram(P + "time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=_LAT, registry=r)
        self.itl = Histogram(P + "inter_token_latency_seconds", "Mean inter-token latency per request", ["model"],
                             buckets=_LAT, registry=r)
        self.duration = Histogram(P + "request_duration_seconds", "Request duration", ["model"],
                                  buckets=_LAT, registry=r)
        self.isl = Histogram(P + "input_sequence_tokens", "Prompt tokens per request", ["model"],
                             buckets=_TOK, registry=r)
        self.osl = Histogram(P + "output_sequence_tokens", "Output tokens per request", ["model"],
                             buckets=_TOK, registry=r)
        self.output_tokens = Counter(P + "output_tokens_total", "Output tokens", ["model"], registry=r)
        self.cached_tokens = Histogram(P + "cached_tokens", "Prompt tokens served from prefix cache", ["model"],
                                       buckets=_TOK, registry=r)
        self.tokenize = Histogram(P + "tokenize_seconds", "Tokenization time", ["model"], buckets=_LAT, registry=r)
        self.template = Histogram(P + "template_seconds", "Chat template time", ["model"], buckets=_LAT, registry=r)
        self.failures = Counter(P + "failures_total", "Requests that ended in an engine or server error",
                                ["model", "reason"], registry=r)
        self.migrations = Counter(P + "migrations_total", "Requests re-dispatched after an instance failure",
                                  ["model"], registry=r)
        # disaggregated prefill / decode
        self.remote_prefills = Counter(P + "disagg_remote_prefills_total", "Requests whose prompt was prefilled on "
                                       "a prefill instance and handed to a decode instance", ["model"], registry=r)
        self.prefill_fallbacks = Counter(P + "disagg_local_prefill_fallbacks_total", "Requests a prefill instance "
                                         "failed (error) or held too long (timeout): prefilled on the decode "
                                         "instance instead", ["model", "reason"], registry=r)
        self.priority = Histogram(P + "request_priority", "Priority of admitted requests (lower = more urgent)",
                                  ["model"], buckets=(-100, -10, -1, 0, 1, 10, 100), registry=r)
        # media generation (image / video / audio models)
        self.media_steps = Counter(P + "media_steps_total", "Denoising steps completed for media requests",
                                   ["model"], registry=r)
        self.media_outputs = Counter(P + "media_outputs_total", "Images, videos and audio clips returned",
                                     ["model"], registry=r)
        self.media_stored_bytes = Gauge(P + "media_stored_bytes", "Bytes of generated media kept for URLs",
                                        registry=r)
        # media input of chat requests (fetched, decoded, cached; server-wide)
        self.media_cache_hits = Counter(P + "media_cache_hits_total", "Media items of chat requests served from the "
                                        "decoded-media cache", ["kind"], registry=r)
        self.media_cache_misses = Counter(P + "media_cache_misses_total", "Media items of chat requests decoded "
                                          "(not in the decoded-media cache)", ["kind"], registry=r)
        self.media_cache_bytes = Gauge(P + "media_cache_bytes", "Bytes of decoded media held by the cache",
                                       registry=r)
        self.media_fetch = Histogram(P + "media_fetch_seconds", "Time to fetch one media item of a chat request "
                                     "(data: URLs included)", ["kind"], buckets=_LAT, registry=r)
        self.media_decode = Histogram(P + "media_decode_seconds", "Time to hash, look up and (on a miss) decode "
                                      "one media item of a chat request", ["kind"], buckets=_LAT, registry=r)
        # model gauges
        g = lambda name, doc: Gauge(P + "model_" + name, doc, ["model"], registry=r)  # noqa: E731
        self.model_context_length = g("context_length", "Context length of the model")
        self.model_block_size = g("kv_cache_block_size", "KV cache block size")
        self.model_total_kv_blocks = g("total_kv_blocks", "KV blocks over all instances")
        self.model_max_num_seqs = g("max_num_seqs", "Max concurrent sequences per instance")
        self.model_max_num_batched_tokens = g("max_num_batched_tokens", "Max batched tokens per step")
        self.model_migration_limit = g("migration_limit", "Migration limit")
        self.model_ready = g("ready", "1 when the model has a ready instance")
        self.model_instances = g("instances", "Ready engine instances (instance x dp rank)")
        # per-instance engine load (the mocker and any engine reporting load_metrics)
        lbl = ["model", "worker_id", "dp_rank"]
        self.engine_running = Gauge("dynamo_engine_running_requests", "Requests running", lbl, registry=r)
        self.engine_waiting = Gauge("dynamo_engine_waiting_requests", "Requests waiting", lbl, registry=r)
        self.engine_kv_usage = Gauge("dynamo_engine_kv_usage_ratio", "Active KV blocks / total", lbl, registry=r)
        self.engine_kv_active = Gauge("dynamo_engine_kv_active_blocks", "Active KV blocks", lbl, registry=r)
        self.engine_hit_rate = Gauge("dynamo_engine_prefix_cache_hit_rate", "Prefix cache hit rate", lbl,
                                     registry=r)
        self.engine_preemptions = Gauge("dynamo_engine_preemptions", "Preemptions so far", lbl, registry=r)
        # KV offload tiers (engines reporting LoadMetrics.kvbm): Dynamo KVBM's names, KvbmMetrics field -> gauge.
        self.kvbm = {f: Gauge(f"kvbm_{f}", d, lbl, registry=r) for f, d in (
            ("offload_blocks_d2h", "Blocks offloaded device -> host"),
            ("offload_blocks_h2d", "Blocks offloaded host -> disk"),
            ("offload_blocks_d2d", "Blocks offloaded device -> disk"),
            ("onboard_blocks_h2d", "Blocks onboarded host -> device"),
            ("onboard_blocks_d2d", "Blocks onboarded disk -> device"),
            ("matched_tokens", "Prompt tokens matched in the offload tiers"),
            ("host_cache_hit_rate", "Host tier hit rate of blocks looked up past the GPU prefix"),
            ("disk_cache_hit_rate", "Disk tier hit rate of blocks looked up past the GPU and host"))}
        # Encoder-output (multimodal embedding) caches of engines: Dynamo's names. Gauges set from the engines'
        # cumulative counts (as the other engine series), so the exposed names are exactly Dynamo's.
        self.embedding_cache_hits = Gauge("dynamo_component_embedding_cache_hits_total",
                                          "Media items whose encoder output was found in the engine's cache", lbl,
                                          registry=r)
        self.embedding_cache_misses = Gauge("dynamo_component_embedding_cache_misses_total",
                                            "Media items the engine had to encode", lbl, registry=r)
        self.embedding_cache_bytes = Gauge("dynamo_component_embedding_cache_current_bytes",
                                           "Bytes of encoder outputs the engine's cache holds", lbl, registry=r)
        # Disaggregation, decode instances (cumulative counts of the engines, hence gauges named *_total).
        self.kv_transfer_bytes = Gauge("dynamo_kv_transfer_bytes_total", "KV bytes this instance pulled from "
                                       "prefill instances", lbl, registry=r)
        self.kv_transfer_failures = Gauge("dynamo_kv_transfer_failures_total", "KV pulls that failed (the "
                                          "instance computed the prompt itself)", lbl, registry=r)

    def model(self, name: str) -> "ModelMetrics":
        """One model's series (see ModelMetrics)."""
        mm = self._models.get(name)
        if mm is None:
            mm = self._models[name] = ModelMetrics(self, name)
        return mm

    def child(self, family: MetricWrapperBase, *labels: str) -> Any:
        """`family.labels(*labels)`, remembered: prometheus_client's labels() costs ~5 us a call."""
        key = (family, labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = family.labels(*labels)
        return c


class ModelMetrics:
    """The "model"-labelled series of one model, bound once instead of ~15 labels() calls per request."""

    __slots__ = _PER_MODEL

    def __init__(self, metrics: FrontendMetrics, name: str) -> None:
        for attr in _PER_MODEL:
            setattr(self, attr, getattr(metrics, attr).labels(name))
