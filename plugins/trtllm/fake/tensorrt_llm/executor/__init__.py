"""Fake of tensorrt_llm.executor (the result types the LLM API hands out)."""

from tensorrt_llm.executor.result import CompletionOutput, GenerationResult, IterationResult, Logprob

__all__ = ["CompletionOutput", "GenerationResult", "IterationResult", "Logprob"]
