"""A FAKE `tensorrt_llm` for tests on machines without TensorRT-LLM: the LLM API's import paths, call signatures,
output objects and KV-event / iteration-stats dict formats, driven by dynamo-mono's mocker (scheduler, KV manager,
perf model), so timing, prefix caching and events behave like an engine's.

Modelled on TensorRT-LLM's LLM API (PyTorch backend) as its source documents it, read at these files / commits
of github.com/NVIDIA/TensorRT-LLM (the plugin's gpu-smoke.sh pins the release it is run against, 1.3.0rc27):

- tensorrt_llm/llmapi/llm.py @ 4c05a748 : BaseLLM.__init__ (model, tokenizer, tokenizer_mode, skip_tokenizer_init,
  trust_remote_code, tensor_parallel_size, dtype, revision, tokenizer_revision, **kwargs; an unknown kwarg is a
  ValueError "LLM got invalid argument"), generate_async(inputs, sampling_params, lora_request,
  prompt_adapter_request, streaming, kv_cache_retention_config, disaggregated_params, _postproc_params,
  scheduling_params, cache_salt), _prepare_sampling_params (end_id None without a tokenizer is a ValueError),
  get_stats_async(timeout) / get_kv_cache_events_async(timeout) -> IterationResult.
- tensorrt_llm/executor/result.py @ 005bc848 : CompletionOutput (index, text, token_ids cumulative, cumulative_logprob,
  logprobs = list[dict[token_id, Logprob(logprob, rank)]], finish_reason in stop / length / timeout / cancelled,
  stop_reason = the stop token id or string, stop tokens cut from token_ids), GenerationResult (request_id,
  prompt_token_ids, finished, abort(), aborted(), async iteration yielding itself), IterationResult (json dicts,
  iteration ends after `timeout` seconds without data).
- tensorrt_llm/sampling_params.py @ 000a01de (1.0.0rc4): SamplingParams fields and _validate (best_of >= n; greedy
  decoding with best_of > 1 refused unless TLLM_ALLOW_N_GREEDY_DECODING).
- tensorrt_llm/scheduling_params.py @ 3699edad : SchedulingParams(attention_dp_rank, attention_dp_relax, agent_hierarchy).
- docs llm-api/reference/KvCacheConfig.html @ 1.3.0rc27: KvCacheConfig fields (subset here, see llmapi/llm_args.py).
- KV event dicts as tensorrt_llm/_utils.py KVCacheEventSerializer writes them ({"event_id", "data": {"type":
  "created" | "stored" | "removed", ...}, "window_size", "attention_dp_rank"}), as consumed by ai-dynamo/dynamo
  components/src/dynamo/trtllm/publisher.py @ 0d385689; iteration stats as the executor's IterationStats JSON
  (numActiveRequests, numQueuedRequests, kvCacheStats{maxNumBlocks, freeNumBlocks, usedNumBlocks, tokensPerBlock,
  allocTotalBlocks, allocNewBlocks, reusedBlocks, missedBlocks, cacheHitRate}, inflightBatchingStats{...}).

CompletionOutput.request_perf_metrics.kv_cache_metrics (num_total_allocated_blocks, num_new_allocated_blocks,
num_reused_blocks, num_missed_blocks, kv_cache_hit_rate) as TensorRT-LLM's perf-metrics tests and Dynamo's
request handler (cached tokens = num_reused_blocks x block size) read it.

Assumptions (not read in source, to be confirmed by the real run, plugins/trtllm/fidelity_check.py): the end id is
not kept in token_ids (finish 'stop', stop_reason None); a finished request's last partial block is announced as a
stored block (Dynamo's publisher drops those, so we reproduce them). Anything this fake does not define raises (AttributeError for
attributes, TypeError for keyword arguments): a plugin calling beyond it fails its tests.
"""

from tensorrt_llm.llmapi.llm import LLM
from tensorrt_llm.sampling_params import SamplingParams
from tensorrt_llm.scheduling_params import SchedulingParams

__version__ = "1.3.0rc27+fake"
FAKE = True  # only the fake has this: tests assert they run against it

__all__ = ["LLM", "SamplingParams", "SchedulingParams", "__version__"]
