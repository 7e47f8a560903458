"""Command-line options of the SGLang engine, spelled as SGLang spells them (others pass through to SGLang)."""

from __future__ import annotations

from dynamo_mono.api import Option

_G = "engine: sglang"

SGLANG_OPTIONS: list[Option] = [
    Option("page_size", int, 16, "tokens per KV page = the router's block size (SGLang's own default is 1; "
           "dynamo-mono routes on 16-token blocks)", _G, min=1),
    Option("dp_size", int, 1, "data-parallel ranks per instance (one scheduler, KV cache and KV event stream each)",
           _G, min=1),
    Option("tp_size", int, 1, "tensor-parallel ranks per dp rank", _G, min=1),
    Option("dtype", str, "auto", "model weight / activation dtype (auto, float16, bfloat16, float32)", _G),
    Option("mem_fraction_static", float, None, "fraction of GPU memory for weights + KV pool (SGLang default)", _G,
           min=0, max=1, min_exclusive=True),
    Option("max_total_tokens", int, None, "KV pool size in tokens (overrides SGLang's memory profiling)", _G, min=1),
    Option("max_running_requests", int, None, "most requests running at once per dp rank", _G, min=1),
    Option("chunked_prefill_size", int, None, "tokens per prefill chunk (-1 = no chunking)", _G, min=-1),
    Option("schedule_policy", str, "fcfs", "SGLang's scheduling policy", _G,
           choices=("fcfs", "lpm", "random", "dfs-weight", "lof", "priority")),
    Option("enable_priority_scheduling", bool, False, "schedule by request priority (SGLang: higher value = more "
           "urgent unless --schedule-low-priority-values-first); off = priorities are not sent", _G),
    Option("schedule_low_priority_values_first", bool, False, "with priority scheduling, lower values run first", _G),
    Option("disable_radix_cache", bool, False, "turn off prefix caching (and with it KV events)", _G),
    Option("sglang_kv_events", bool, True, "subscribe to SGLang's KV events (ZMQ, loopback) for the KV router", _G),
    Option("sglang_load_poll_ms", float, 50.0, "how often the plugin reads SGLang's per-dp-rank load snapshots "
           "(running / waiting requests, KV tokens in use)", _G, min=1.0),
]

# Options forwarded to SGLang's ServerArgs under the same name, when set.
SERVER_ARG_NAMES = (
    "page_size", "dp_size", "tp_size", "dtype", "mem_fraction_static", "max_total_tokens", "max_running_requests",
    "chunked_prefill_size", "schedule_policy", "enable_priority_scheduling", "schedule_low_priority_values_first",
    "disable_radix_cache",
)
