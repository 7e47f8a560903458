"""Router options with Dynamo's `--router-*` flag names, env vars and defaults (the overlap weight's is measured)."""

from __future__ import annotations

from dynamo_mono.config import Option

ROUTER_MODES = ("round-robin", "random", "kv", "direct")

ROUTER_OPTIONS: list[Option] = [
    Option("router_mode", str, "round-robin",
           "How requests are spread over engine instances: round-robin, random, kv (prefix-cache and "
           "load aware) or direct (the request must pin an instance)",
           group="router", choices=ROUTER_MODES, env="DYN_ROUTER_MODE"),
    Option("router_kv_overlap_score_weight", float, 8.0,
           "KV router: weight of the prompt blocks still to prefill against active decode blocks; "
           "higher prefers cache reuse (TTFT), lower prefers balanced decode load (ITL). Dynamo's "
           "default is 1.0; 8 is measured (docs/router.md)",
           group="router", min=0.0, deprecated_aliases=("--kv-overlap-score-weight",),
           env="DYN_ROUTER_KV_OVERLAP_SCORE_WEIGHT"),
    Option("router_kv_host_overlap_weight", float, 0.5,
           "KV router: worth of a prompt block an instance holds in its host-memory offload tier (continuing "
           "its GPU prefix), relative to a GPU block (1); onboarding is cheaper than recompute, dearer than a "
           "GPU hit. 0 = ignore the host tier",
           group="router", min=0.0, max=1.0, env="DYN_ROUTER_KV_HOST_OVERLAP_WEIGHT"),
    Option("router_kv_disk_overlap_weight", float, 0.25,
           "KV router: worth of a prompt block an instance holds in its disk offload tier, relative to a GPU "
           "block (1). 0 = ignore the disk tier",
           group="router", min=0.0, max=1.0, env="DYN_ROUTER_KV_DISK_OVERLAP_WEIGHT"),
    Option("router_temperature", float, 0.0,
           "KV router: softmax temperature over normalised instance costs; 0 picks the cheapest",
           group="router", min=0.0, env="DYN_ROUTER_TEMPERATURE"),
    Option("router_kv_events", bool, True,
           "KV router: index KV cache events from engines; --no-router-kv-events predicts cache "
           "contents from routing decisions instead (TTL and size bounded)",
           group="router", deprecated_aliases=("--kv-events",), env="DYN_ROUTER_USE_KV_EVENTS"),
    Option("router_ttl_secs", float, 120.0,
           "KV router without events: seconds a predicted cached block is remembered",
           group="router", min=0.0, min_exclusive=True, env="DYN_ROUTER_TTL_SECS"),
    Option("router_max_tree_size", int, 2**20,
           "KV router without events: most predicted (block, instance) entries kept before pruning",
           group="router", min=1, env="DYN_ROUTER_MAX_TREE_SIZE"),
    Option("router_prune_target_ratio", float, 0.8,
           "KV router without events: pruning drops the oldest entries down to this fraction of "
           "--router-max-tree-size",
           group="router", min=0.0, max=1.0, min_exclusive=True, env="DYN_ROUTER_PRUNE_TARGET_RATIO"),
    Option("router_assume_kv_reuse", bool, True,
           "KV router: count prompt blocks shared by active requests on one instance once",
           group="router", deprecated_aliases=("--assume-kv-reuse",), env="DYN_ROUTER_ASSUME_KV_REUSE"),
    Option("router_track_active_blocks", bool, True,
           "KV router: track active decode blocks per instance for load balancing",
           group="router", deprecated_aliases=("--track-active-blocks",),
           env="DYN_ROUTER_TRACK_ACTIVE_BLOCKS"),
    Option("router_track_output_blocks", bool, False,
           "KV router: add generated tokens' blocks to the active decode blocks as they are produced",
           group="router", deprecated_aliases=("--track-output-blocks",),
           env="DYN_ROUTER_TRACK_OUTPUT_BLOCKS"),
    Option("active_decode_blocks_threshold", float, None,
           "An instance is busy (skipped) when its active decode blocks exceed this fraction of its "
           "total KV blocks; unset disables the check",
           group="router", min=0.0, max=1.0, env="DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD"),
    Option("active_prefill_tokens_threshold", int, None,
           "An instance is busy (skipped) when its in-flight prefill tokens exceed this count; "
           "unset disables the check",
           group="router", min=0, env="DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD"),
    Option("active_prefill_tokens_threshold_frac", float, None,
           "An instance is busy (skipped) when its in-flight prefill tokens exceed this multiple of "
           "its max_num_batched_tokens; unset disables the check",
           group="router", min=0.0, env="DYN_ACTIVE_PREFILL_TOKENS_THRESHOLD_FRAC"),
]
