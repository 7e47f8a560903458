"""TrtllmEngine: one dynamo-mono engine instance over TensorRT-LLM's LLM API (token ids in, token ids out)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from dynamo_mono.api import (ConfigError, EngineArgs, EngineError, EngineOutput, EngineRequest, KvEventBatch,
                             KvEventSink, LoadMetrics, ModelCard, TokenLogprob)

from dynamo_mono_trtllm.events import KvEventConverter, poll
from dynamo_mono_trtllm.llm_args import build_plan
from dynamo_mono_trtllm.load import StatsRecorder
from dynamo_mono_trtllm.sampling import refusal, sampling_params

log = logging.getLogger("dynamo_mono.trtllm")

# CompletionOutput.finish_reason -> ours ("cancelled": our abort; "timeout": the engine gave up on it)
_FINISH = {"stop": "stop", "length": "length", "cancelled": "abort", "timeout": "error"}


def token_logprobs(token_ids: list[int], entries: list[Any], n_top: int) -> list[TokenLogprob]:
    """Our TokenLogprob list from TensorRT-LLM's per-position entries: {token_id: Logprob(logprob, rank)} dicts
    (or a bare float, the sampled token's logprob, where a backend gives only that)."""
    out: list[TokenLogprob] = []
    for j, tok in enumerate(token_ids):
        entry = entries[j] if j < len(entries) else None
        if isinstance(entry, (int, float)):
            out.append(TokenLogprob(tok, float(entry)))
            continue
        if not entry:
            out.append(TokenLogprob(tok, float("-inf")))
            continue
        sampled = entry.get(tok)
        ranked = sorted(((lp.rank if lp.rank is not None else 1 << 30, tid, lp.logprob) for tid, lp in entry.items()),
                        key=lambda x: x[0])
        top = [(tid, lp) for _r, tid, lp in ranked[:n_top]]
        out.append(TokenLogprob(tok, sampled.logprob if sampled is not None else float("-inf"), top))
    return out


class Deltas:
    """Turns one CompletionOutput's cumulative token_ids / logprobs into the new part since the last call."""

    __slots__ = ("sent", "sent_lp")

    def __init__(self) -> None:
        self.sent = 0
        self.sent_lp = 0

    def take(self, comp: Any) -> tuple[list[int], list[Any]]:
        toks = comp.token_ids or []
        new = list(toks[self.sent:])
        self.sent = len(toks)
        lps = comp.logprobs or []
        new_lp = list(lps[self.sent_lp:])
        self.sent_lp = len(lps)
        return new, new_lp


def cached_tokens(comp: Any, block_size: int) -> int | None:
    """Prompt tokens served from the KV cache: the request's reused blocks (request_perf_metrics), else None
    (Dynamo's TRT-LLM handler counts them the same way)."""
    perf = getattr(comp, "request_perf_metrics", None)
    kvm = getattr(perf, "kv_cache_metrics", None) if perf is not None else None
    if kvm is None:
        return None
    return int(kvm.num_reused_blocks) * block_size


class TrtllmEngine:
    """An engine instance: a tensorrt_llm.LLM (PyTorch backend) plus pollers of its KV events and iteration stats."""

    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.options = args.options or {}
        self.instance_id = args.instance_id
        self.plan = build_plan(args)
        self.dp_size = self.plan.dp_size
        self.block_size = self.plan.block_size
        self.interval = float(self.options.get("trtllm_poll_interval") or 0.05)
        self.eos_ids = list(args.eos_token_ids or ())
        self.llm: Any = None
        self.converter: KvEventConverter | None = None
        max_tokens = self.options.get("kv_cache_max_tokens")
        self.stats = StatsRecorder(self.dp_size, int(max_tokens) // self.block_size if max_tokens else 0)
        self._card: ModelCard | None = None
        self._stopped = True
        self._tasks: list[asyncio.Task] = []
        self._live: dict[str, Any] = {}  # our request id -> RequestOutput in flight

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        from tensorrt_llm import LLM
        from tensorrt_llm.llmapi import KvCacheConfig

        plan = self.plan
        try:
            kv = KvCacheConfig(**plan.kv_cache)
            # Blocks the loop while TensorRT-LLM loads the model: startup only, before serving. It must run on
            # the loop's thread: the LLM API binds its result queues to the running loop.
            self.llm = LLM(self.args.model_path, kv_cache_config=kv, **plan.kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"TensorRT-LLM refused its arguments: {exc}") from None
        if plan.kv_events:
            self.converter = KvEventConverter(self.instance_id, self.block_size, self.dp_size)
        self._stopped = False
        loop = asyncio.get_running_loop()
        if self.converter is not None:
            self._tasks.append(loop.create_task(poll(self.llm.get_kv_cache_events_async, self.converter.handle,
                                                     self.interval, lambda: self._stopped)))
        self._tasks.append(loop.create_task(poll(self.llm.get_stats_async, self.stats.record, self.interval,
                                                 lambda: self._stopped)))
        self._card = ModelCard(
            name=self.args.served_model_name,
            max_model_len=int(plan.max_seq_len or self.args.max_model_len or 0),
            block_size=self.block_size,
            dp_size=self.dp_size,
            # Known up front only when the KV size is configured in tokens (else the memory fraction decides it);
            # KvCacheConfig.max_tokens sizes each rank's cache.
            total_kv_blocks=self.stats.configured_blocks or None,
            max_num_seqs=plan.kwargs.get("max_batch_size"),
            max_num_batched_tokens=plan.kwargs.get("max_num_tokens"),
            reasoning_parser=self.args.reasoning_parser,
            tool_call_parser=self.args.tool_call_parser,
            eos_token_ids=list(self.eos_ids),
            supports_priority=False,
            supports_logprobs=True,
            kv_events=self.converter is not None,
            kind="chat",
        )
        log.info("TensorRT-LLM instance %d ready: %d tokens per block, %d dp rank(s), KV events %s",
                 self.instance_id, self.block_size, self.dp_size, "on" if self.converter else "off")

    async def stop(self) -> None:
        self._stopped = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    def model_card(self) -> ModelCard:
        if self._card is None:
            raise RuntimeError("TensorRT-LLM engine not started")
        return self._card

    def healthy(self) -> bool:
        return not self._stopped and self.llm is not None and not any(
            t.done() and not t.cancelled() and t.exception() is not None for t in self._tasks)

    # --- KV events / metrics -----------------------------------------------------------------------
    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        if self.converter is not None:
            self.converter.sink = sink

    def kv_snapshot(self) -> list[KvEventBatch]:
        return self.converter.snapshot() if self.converter is not None else []

    def load_metrics(self) -> list[LoadMetrics]:
        return self.stats.metrics()

    # --- requests ------------------------------------------------------------------------------------
    async def abort(self, request_id: str) -> None:
        res = self._live.get(request_id)
        if res is not None and not res.finished:
            res.abort()

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream the request's new tokens; closing this generator (client gone) aborts it in TensorRT-LLM."""
        if self.llm is None or self._stopped:
            yield EngineOutput(finish_reason="error", error="trtllm: engine is not running",
                               prompt_tokens=len(request.token_ids), cached_tokens=0)
            return
        why = refusal(request)
        if why is not None:
            raise EngineError(f"trtllm: {why}", retryable=False)
        kw: dict[str, Any] = {"streaming": True}
        rank = 0
        if self.dp_size > 1 and request.dp_rank is not None:
            from tensorrt_llm.scheduling_params import SchedulingParams

            rank = request.dp_rank
            kw["scheduling_params"] = SchedulingParams(attention_dp_rank=rank, attention_dp_relax=False)
        try:
            params = sampling_params(request, self.eos_ids)
            res = self.llm.generate_async(list(request.token_ids), sampling_params=params, **kw)
        except (ValueError, TypeError) as exc:  # TensorRT-LLM refused the request itself: no migration
            raise EngineError(f"trtllm: {exc}", retryable=False) from None
        n_top = request.sampling.logprobs
        end_id = params.end_id
        deltas = [Deltas() for _ in range(params.n)]
        done = [False] * params.n
        first = [True] * params.n
        rid = request.request_id
        self._live[rid] = res
        self.stats.in_flight[rank] += 1
        finished = False
        try:
            async for out in res:
                for comp in out.outputs:
                    i = comp.index
                    if done[i]:
                        continue
                    toks, lps = deltas[i].take(comp)
                    eo = EngineOutput(token_ids=toks, index=i)
                    if n_top is not None and toks:
                        eo.logprobs = token_logprobs(toks, lps, n_top)
                    if first[i]:
                        cached = cached_tokens(comp, self.block_size)
                        if not toks and cached is None and comp.finish_reason is None:
                            continue  # nothing yet (perf metrics come with the first token)
                        first[i] = False
                        eo.prompt_tokens = len(request.token_ids)
                        eo.cached_tokens = min(cached or 0, len(request.token_ids))
                    if comp.finish_reason is not None:
                        done[i] = True
                        reason = _FINISH.get(comp.finish_reason, "stop")
                        if reason == "stop":
                            if isinstance(comp.stop_reason, int):
                                eo.stop_token_id = comp.stop_reason  # cut from token_ids by TensorRT-LLM
                            elif toks and toks[-1] == end_id:
                                eo.stop_token_id = toks.pop()  # a version that keeps the end id in token_ids
                                if eo.logprobs:
                                    eo.logprobs.pop()
                            else:
                                eo.stop_token_id = end_id
                        elif reason == "error":
                            eo.error = f"trtllm: request {comp.finish_reason}"
                        eo.finish_reason = reason
                    elif not toks and not first[i] and eo.prompt_tokens is None:
                        continue
                    yield eo
                if all(done):
                    finished = True
                    return
            finished = True
            # The result finished without a reason on some sequence (Dynamo reports "unknown" for this): it did end.
            for i in (i for i, d in enumerate(done) if not d):
                log.warning("TensorRT-LLM request %s: output %d finished without a finish reason", rid, i)
                yield EngineOutput(finish_reason="stop", index=i,
                                   prompt_tokens=len(request.token_ids) if first[i] else None,
                                   cached_tokens=0 if first[i] else None)
        except (asyncio.CancelledError, GeneratorExit, EngineError):
            raise
        except Exception as exc:  # engine failure mid-request
            finished = True
            log.warning("TensorRT-LLM request %s failed: %s", rid, exc)
            yield EngineOutput(finish_reason="error", error=f"trtllm: {type(exc).__name__}: {exc}",
                               prompt_tokens=len(request.token_ids), cached_tokens=0)
        finally:
            self._live.pop(rid, None)
            self.stats.in_flight[rank] -= 1
            if not finished and not res.finished:
                res.abort()
