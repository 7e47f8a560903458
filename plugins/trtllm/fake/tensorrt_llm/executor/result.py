"""Fake of tensorrt_llm/executor/result.py: CompletionOutput, GenerationResult (async-iterable, abortable) and
IterationResult (stats / KV events as json dicts), with the real attribute names and update semantics."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, NamedTuple, Optional, Union


@dataclass(slots=True)
class Logprob:
    """Holds logprob and vocab rank for a token."""

    logprob: float
    rank: Optional[int] = None


@dataclass(slots=True)
class KvCacheMetrics:
    """Per-request KV cache counters (the executor binding's RequestPerfMetrics.KvCacheMetrics)."""

    num_total_allocated_blocks: int = 0
    num_new_allocated_blocks: int = 0
    num_reused_blocks: int = 0
    num_missed_blocks: int = 0
    kv_cache_hit_rate: float = 0.0


@dataclass(slots=True)
class RequestPerfMetrics:
    """The part of the binding's RequestPerfMetrics this fake fills."""

    kv_cache_metrics: KvCacheMetrics = field(default_factory=KvCacheMetrics)
    first_iter: Optional[int] = None
    last_iter: Optional[int] = None
    iter: Optional[int] = None


@dataclass(slots=True)
class CompletionOutput:
    """One output sequence of a request; token_ids / logprobs are cumulative over the stream."""

    index: int
    text: str = ""
    token_ids: Optional[list[int]] = field(default_factory=list)
    cumulative_logprob: Optional[float] = None
    logprobs: Optional[list] = field(default_factory=list)
    prompt_logprobs: Optional[list] = field(default_factory=list)
    finish_reason: Optional[Literal["stop", "length", "timeout", "cancelled"]] = None
    stop_reason: Optional[Union[int, str]] = None
    generation_logits: Any = None
    disaggregated_params: Any = None
    request_perf_metrics: Optional[RequestPerfMetrics] = None
    _last_text_len: int = field(default=0, init=False, repr=False)
    _last_token_ids_len: int = field(default=0, init=False, repr=False)
    _last_logprobs_len: int = field(default=0, init=False, repr=False)

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def text_diff(self) -> str:
        return self.text[self._last_text_len:]

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len:]

    @property
    def logprobs_diff(self) -> list:
        return self.logprobs[self._last_logprobs_len:]


class Response(NamedTuple):
    """One executor response for one sequence (the fake's stand-in for tllm.Response)."""

    sequence_index: int
    new_tokens: list[int]
    new_logprobs: Optional[list]  # list[dict[int, Logprob]] for new_tokens, or None
    cum_logprob: Optional[float]
    finish_reason: Optional[str]  # "end_id" | "stop_words" | "length" | "cancelled" | None
    stop_token: Optional[int]  # the stop word (token id) for "stop_words"
    perf: Optional[RequestPerfMetrics]
    error: Optional[str]


class GenerationResult:
    """The result of a generation request: `async for` yields this object after every response."""

    def __init__(self, request_id: int, prompt_token_ids: list[int], sampling_params: Any, streaming: bool,
                 abort_fn: Callable[[int], None]) -> None:
        self.id = request_id
        self.sampling_params = sampling_params
        self._prompt_token_ids = list(prompt_token_ids)
        self._streaming = streaming
        self._abort_fn = abort_fn
        self._aborted = False
        self._done = False
        self._outputs = [CompletionOutput(i) for i in range(sampling_params.best_of)]
        self._open = set(range(sampling_params.best_of))
        self.aqueue: asyncio.Queue[Response] = asyncio.Queue()
        self.disaggregated_params = None
        self.decoding_iter = 0

    @property
    def request_id(self) -> int:
        return self.id

    @property
    def prompt_token_ids(self) -> list[int]:
        return self._prompt_token_ids

    @property
    def outputs(self) -> list[CompletionOutput]:
        return self._outputs[:self.sampling_params.n]

    @property
    def finished(self) -> bool:
        return self._done

    def abort(self) -> None:
        """Abort the generation request."""
        self._abort_fn(self.id)
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    def _handle_response(self, r: Response) -> None:
        if r.error is not None:
            self._done = True
            raise RuntimeError(r.error)
        out = self._outputs[r.sequence_index]
        out._last_token_ids_len = len(out.token_ids)
        out._last_logprobs_len = len(out.logprobs)
        out.token_ids.extend(r.new_tokens)
        if r.new_logprobs is not None:
            out.logprobs.extend(r.new_logprobs)
        if r.cum_logprob is not None:
            out.cumulative_logprob = r.cum_logprob
        if r.perf is not None:
            out.request_perf_metrics = r.perf
        self.decoding_iter += 1
        if r.finish_reason is not None:
            if r.finish_reason == "stop_words":
                out.finish_reason = "stop"
                out.stop_reason = r.stop_token
            elif r.finish_reason == "end_id":
                out.finish_reason = "stop"
            else:
                out.finish_reason = r.finish_reason
            self._open.discard(r.sequence_index)
            if not self._open:
                self._done = True

    async def aresult(self) -> "GenerationResult":
        while not self._done:
            self._handle_response(await self.aqueue.get())
        return self

    def __aiter__(self) -> "GenerationResult":
        return self

    async def __anext__(self) -> "GenerationResult":
        if self._done:
            raise StopAsyncIteration
        self._handle_response(await self.aqueue.get())
        return self


class IterationResult:
    """Runtime results (stats or KV events) as json strings, decoded on the way out; iteration ends when none
    arrives within the timeout."""

    def __init__(self, queue: "asyncio.Queue[str]", timeout: Optional[float]) -> None:
        self.aqueue = queue
        self._timeout = timeout
        self._done = False

    def set_timeout(self, timeout: float) -> None:
        self._timeout = timeout

    def __aiter__(self) -> "IterationResult":
        return self

    async def __anext__(self) -> dict:
        if self._done:
            raise StopAsyncIteration
        try:
            if self._timeout is not None and self._timeout <= 0:
                data = self.aqueue.get_nowait()
            else:
                data = await asyncio.wait_for(self.aqueue.get(), self._timeout)
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            self._done = True
            raise StopAsyncIteration from None
        return json.loads(data)
