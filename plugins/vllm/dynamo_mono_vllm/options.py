"""Command-line options of the vLLM engine, spelled as vLLM spells them (others pass through to vLLM)."""

from __future__ import annotations

from dynamo_mono.api import Option

_G = "engine: vllm"

# Options another engine (the mocker) may also define under the same name: dedupe keeps one definition,
# so its default may be the mocker's. The vLLM engine only forwards these when the user set them.
VLLM_OPTIONS: list[Option] = [
    Option("dtype", str, "auto", "model weight / activation dtype (auto, float32, bfloat16, float16)", _G),
    Option("block_size", int, None, "tokens per KV block (vLLM default; on CPU a multiple of 32)", _G, min=1),
    Option("enable_prefix_caching", bool, None, "reuse cached KV blocks of shared prefixes (vLLM default: on)", _G),
    Option("tensor_parallel_size", int, 1, "tensor-parallel ranks per instance", _G, min=1),
    Option("data_parallel_size", int, 1, "data-parallel ranks per instance", _G, min=1),
    Option("gpu_memory_utilization", float, None, "fraction of accelerator memory vLLM may use", _G,
           min=0, max=1, min_exclusive=True),
    Option("num_gpu_blocks_override", int, None, "KV cache size in blocks (overrides vLLM's profiling)", _G, min=1),
    Option("max_num_seqs", int, None, "most sequences running at once", _G, min=1),
    Option("max_num_batched_tokens", int, None, "token budget of one engine step", _G, min=1),
    Option("enforce_eager", bool, None, "disable CUDA graphs / compilation", _G),
    Option("scheduling_policy", str, "fcfs", "vLLM scheduler policy; 'priority' honours request priority",
           _G, choices=("fcfs", "priority")),
    Option("enable_lora", bool, None, "enable LoRA adapters", _G),
    Option("vllm_kv_events", bool, True, "publish vLLM's KV cache events to the KV router (ZMQ on loopback)", _G),
    Option("disaggregation_mode", str, "agg", "agg: full requests; prefill: prompt + first token, KV handed to a "
           "decode instance; decode: continues from KV pulled from a prefill instance (vLLM NixlConnector)", _G,
           choices=("agg", "prefill", "decode")),
    Option("kv_transfer_host", str, "127.0.0.1", "address this instance's KV transfer endpoint binds to and "
           "advertises (vLLM: VLLM_NIXL_SIDE_CHANNEL_HOST)", _G),
    Option("kv_transfer_port", int, 0, "NIXL side-channel port of a disaggregated vLLM instance "
           "(VLLM_NIXL_SIDE_CHANNEL_PORT; + dp rank); 0 = a free port per instance", _G, min=0, max=65535),
    Option("kv_lease_duration", int, 30, "seconds a vLLM prefill instance keeps a prompt's KV blocks for a decode "
           "instance that has not read them yet (decode instances renew it while they wait)", _G, min=1),
    Option("multimodal_embedding_cache_capacity_gb", float, None,
           "GiB of CPU memory for encoder outputs (image / video / audio embeddings) reused across requests by "
           "media uuid: vLLM's ECCPUConnector (--ec-transfer-config, ec_cpu_bytes), which needs vLLM's V2 model "
           "runner (Triton, GPU). Unset or 0 = off", _G, min=0),
]

# Options forwarded to AsyncEngineArgs under the same attribute name.
ENGINE_ARG_NAMES = (
    "dtype", "block_size", "enable_prefix_caching", "tensor_parallel_size", "data_parallel_size",
    "gpu_memory_utilization", "num_gpu_blocks_override", "max_num_seqs", "max_num_batched_tokens",
    "enforce_eager", "scheduling_policy", "enable_lora",
)
