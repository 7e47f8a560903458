"""Fake of tensorrt_llm.llmapi: the names the LLM API exports that the plugin uses."""

from tensorrt_llm.executor.result import CompletionOutput
from tensorrt_llm.llmapi.llm import LLM, RequestOutput
from tensorrt_llm.llmapi.llm_args import KvCacheConfig
from tensorrt_llm.sampling_params import GuidedDecodingParams, SamplingParams
from tensorrt_llm.scheduling_params import SchedulingParams

__all__ = ["LLM", "RequestOutput", "CompletionOutput", "KvCacheConfig", "SamplingParams", "GuidedDecodingParams",
           "SchedulingParams"]
