"""Command-line options of the TensorRT-LLM engine, spelled as TensorRT-LLM's LlmArgs / KvCacheConfig fields."""

from __future__ import annotations

from dynamo_mono.api import Option

_G = "engine: trtllm"

# Options another engine may also define under the same name (tensor_parallel_size, max_num_tokens ...) keep one
# definition; this plugin forwards them only when set, so an engine's default never leaks into another's.
TRTLLM_OPTIONS: list[Option] = [
    Option("tensor_parallel_size", int, 1, "tensor-parallel ranks per instance (LlmArgs.tensor_parallel_size)", _G,
           min=1),
    Option("pipeline_parallel_size", int, None, "pipeline-parallel ranks per instance", _G, min=1),
    Option("enable_attention_dp", bool, None, "attention data parallelism: each of the tensor-parallel ranks runs "
           "its own attention batch and KV cache; they are the instance's dp ranks for routing", _G),
    Option("max_batch_size", int, None, "most requests in one batch (LlmArgs.max_batch_size)", _G, min=1),
    Option("max_num_tokens", int, None, "token budget of one engine iteration (LlmArgs.max_num_tokens)", _G, min=1),
    Option("max_seq_len", int, None, "longest sequence, prompt + output (default: --max-model-len or the model's)",
           _G, min=1),
    Option("enable_chunked_prefill", bool, None, "split long prompts across iterations", _G),
    Option("tokens_per_block", int, 32, "tokens per KV block (KvCacheConfig.tokens_per_block, a power of two)", _G,
           min=2),
    Option("free_gpu_memory_fraction", float, None, "fraction of free GPU memory for the KV cache "
           "(KvCacheConfig.free_gpu_memory_fraction; TensorRT-LLM's default 0.9)", _G, min=0, max=1,
           min_exclusive=True),
    Option("kv_cache_max_tokens", int, None, "KV cache size in tokens (KvCacheConfig.max_tokens)", _G, min=1),
    Option("enable_block_reuse", bool, True, "reuse cached KV blocks of shared prefixes (KvCacheConfig)", _G),
    Option("event_buffer_max_size", int, 1024, "KV cache events TensorRT-LLM buffers between our polls "
           "(KvCacheConfig.event_buffer_max_size; 0 = no KV events, the router falls back to approximate mode)",
           _G, min=0),
    Option("trtllm_kv_events", bool, True, "feed TensorRT-LLM's KV cache events to the KV router", _G),
    Option("trtllm_poll_interval", float, 0.05, "seconds the KV-event and stats pollers wait for TensorRT-LLM's "
           "queues before polling again", _G, min=0.001),
]

# Our option name -> the LLM(...) keyword it sets (forwarded only when set).
LLM_ARG_NAMES = {
    "pipeline_parallel_size": "pipeline_parallel_size",
    "enable_attention_dp": "enable_attention_dp",
    "max_batch_size": "max_batch_size",
    "max_num_tokens": "max_num_tokens",
    "enable_chunked_prefill": "enable_chunked_prefill",
}
