"""Fake of tensorrt_llm/llmapi/llm_args.py: KvCacheConfig (subset of its fields) and the TorchLlmArgs field names
LLM(**kwargs) accepts (an argument outside them is refused, as BaseLLM.__init__ does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional


@dataclass(slots=True, kw_only=True)
class KvCacheConfig:
    """KvCacheConfig fields at 1.3.0rc27 (docs llm-api/reference/KvCacheConfig); unknown keywords: TypeError."""

    enable_block_reuse: bool = True
    max_tokens: Optional[int] = None
    max_attention_window: Optional[List[int]] = None
    sink_token_length: Optional[int] = None
    free_gpu_memory_fraction: Optional[float] = 0.9
    host_cache_size: Optional[int] = None
    cross_kv_cache_fraction: Optional[float] = None
    secondary_offload_min_priority: Optional[int] = None
    event_buffer_max_size: int = 0
    attention_dp_events_gather_period_ms: int = 5
    enable_partial_reuse: bool = True
    copy_on_partial_reuse: bool = True
    use_uvm: bool = False
    max_gpu_total_bytes: int = 0
    iteration_stats_interval: int = 1
    dtype: str = "auto"
    tokens_per_block: int = 32

    def __post_init__(self) -> None:
        if self.free_gpu_memory_fraction is not None and not 0 <= self.free_gpu_memory_fraction <= 1:
            raise ValueError("free_gpu_memory_fraction must be in [0, 1]")
        if self.tokens_per_block < 2 or self.tokens_per_block & (self.tokens_per_block - 1):
            raise ValueError("tokens_per_block must be a power of two greater than 1")


# TorchLlmArgs fields this fake accepts as LLM(**kwargs) (the real set is larger; a plugin passing one outside this
# set fails its fake tests, which is the point: add it here only after reading it in the real llm_args.py).
TORCH_LLM_ARG_NAMES = frozenset({
    "backend", "max_batch_size", "max_num_tokens", "max_seq_len", "max_input_len", "max_beam_width",
    "pipeline_parallel_size", "context_parallel_size", "gpus_per_node", "moe_expert_parallel_size",
    "moe_tensor_parallel_size", "enable_attention_dp", "kv_cache_config", "enable_chunked_prefill",
    "enable_iter_perf_stats", "enable_iter_req_stats", "iter_stats_max_iterations", "return_perf_metrics",
    "stream_interval", "disable_overlap_scheduler", "cuda_graph_config", "attn_backend", "sampler_type",
    "print_iter_log", "enable_lora", "lora_config", "guided_decoding_backend", "load_format",
    "scheduler_config", "batch_wait_timeout_ms", "enable_autotuner", "speculative_config",
    "cache_transceiver_config", "moe_config", "checkpoint_format", "trust_remote_code",
})
