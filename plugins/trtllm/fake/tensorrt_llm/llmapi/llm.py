"""Fake of tensorrt_llm/llmapi/llm.py: LLM (PyTorch backend) over dynamo-mono's mocker, and RequestOutput.

Requests run on the mocker's scheduler / KV manager / perf model (one scheduler per attention-DP rank); the
fake translates its outputs into cumulative CompletionOutputs and its KV events into TRT-LLM's event dicts, with
TRT-LLM-style 64-bit block hashes of its own (not dynamo-mono's), partial last blocks announced as stored, and
one IterationStats dict per engine step (enable_iter_perf_stats).

Fake-only environment: TRTLLM_FAKE_SPEEDUP_RATIO (divides the perf model's step times; 0 = no sleeping),
TRTLLM_FAKE_GPU_KV_TOKENS (KV cache tokens before free_gpu_memory_fraction), TRTLLM_FAKE_FAIL_AFTER (every request
fails after that many tokens: the result iterator raises, as a request error of the real executor does)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Optional

from dynamo_mono.api import (AllBlocksCleared, BlockRemoved, BlockStored, EngineArgs, EngineOutput, EngineRequest,
                             KvEventBatch, StopConditions, block_hashes)
from dynamo_mono.api import SamplingParams as _OurSampling
from mocker.engine import MockerEngine

from tensorrt_llm.executor.result import (GenerationResult, IterationResult, KvCacheMetrics, Logprob,
                                          RequestPerfMetrics, Response)
from tensorrt_llm.llmapi.llm_args import TORCH_LLM_ARG_NAMES, KvCacheConfig
from tensorrt_llm.sampling_params import SamplingParams
from tensorrt_llm.scheduling_params import SchedulingParams

# KV cache size when KvCacheConfig.max_tokens is unset: this many tokens x free_gpu_memory_fraction.
FAKE_GPU_KV_TOKENS = int(os.environ.get("TRTLLM_FAKE_GPU_KV_TOKENS", "262144"))
_M64 = (1 << 64) - 1


def _trt_hash(our_hash: int) -> int:
    """A u64 block hash of TRT-LLM's own (unrelated to dynamo-mono's, half of them >= 2**63)."""
    return int.from_bytes(hashlib.blake2b((our_hash & _M64).to_bytes(8, "little"), digest_size=8,
                                          person=b"trt-fake").digest(), "little")


def _partial_hash(parent: Optional[int], tokens: list[int]) -> int:
    data = (parent or 0).to_bytes(8, "little") + b"".join(t.to_bytes(4, "little") for t in tokens)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"trt-part").digest(), "little")


class RequestOutput(GenerationResult):
    """The output data of a completion request to the LLM."""

    @property
    def prompt(self) -> Optional[str]:
        return None  # token-id prompts only (no tokenizer in this fake)


class _Engine(MockerEngine):
    """The mocker with a hook after each engine step (iteration stats)."""

    on_step: Any = None

    def _complete(self, rank, sched, plan):  # type: ignore[override]
        super()._complete(rank, sched, plan)
        if self.on_step is not None:
            self.on_step(rank, plan)


class LLM:
    """LLM class is the main class for running a LLM model (fake: PyTorch backend semantics, mocker inside)."""

    def __init__(self, model, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                 trust_remote_code=False, tensor_parallel_size=1, dtype="auto", revision=None,
                 tokenizer_revision=None, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in TORCH_LLM_ARG_NAMES:
                raise ValueError(f"{self.__class__.__name__} got invalid argument: {key}")
        if kwargs.get("backend") != "pytorch":
            raise ValueError("fake tensorrt_llm: only backend='pytorch' is modelled")
        if not skip_tokenizer_init or tokenizer is not None:
            raise NotImplementedError("fake tensorrt_llm: token-id prompts only (skip_tokenizer_init=True)")
        path = Path(model)
        if not (path / "config.json").is_file():
            raise ValueError(f"{model} is not a Hugging Face model directory (no config.json)")
        cfg = json.loads((path / "config.json").read_text())
        kv: KvCacheConfig = kwargs.get("kv_cache_config") or KvCacheConfig()
        if not isinstance(kv, KvCacheConfig):
            raise TypeError(f"kv_cache_config must be a KvCacheConfig, not {type(kv).__name__}")
        self.tokenizer = None
        self._kv_config = kv
        self._attention_dp = bool(kwargs.get("enable_attention_dp", False))
        self._dp_size = int(tensor_parallel_size) if self._attention_dp else 1
        self._max_num_tokens = int(kwargs.get("max_num_tokens") or 8192)
        self._max_batch_size = int(kwargs.get("max_batch_size") or 2048)
        self._max_seq_len = int(kwargs.get("max_seq_len") or cfg.get("max_position_embeddings") or 4096)
        self._chunked = bool(kwargs.get("enable_chunked_prefill", False))
        self._iter_stats = bool(kwargs.get("enable_iter_perf_stats", False))
        self._perf_metrics = bool(kwargs.get("return_perf_metrics", False))
        bs = kv.tokens_per_block
        tokens = kv.max_tokens if kv.max_tokens is not None else int(FAKE_GPU_KV_TOKENS * (kv.free_gpu_memory_fraction or 0.9))
        self._num_blocks = max(1, tokens // bs)
        eos = cfg.get("eos_token_id")
        options = {
            "block_size": bs, "num_gpu_blocks_override": self._num_blocks, "max_num_seqs": self._max_batch_size,
            "max_num_batched_tokens": self._max_num_tokens, "enable_prefix_caching": kv.enable_block_reuse,
            "enable_chunked_prefill": self._chunked, "data_parallel_size": self._dp_size,
            "speedup_ratio": float(os.environ.get("TRTLLM_FAKE_SPEEDUP_RATIO", "1.0")),
            "enable_lora": False, "watermark": 0.0,
            # fault injection for tests (not a TensorRT-LLM knob): every request fails after this many tokens
            "mocker_fail_after": int(os.environ["TRTLLM_FAKE_FAIL_AFTER"]) if os.environ.get("TRTLLM_FAKE_FAIL_AFTER")
            else None,
        }
        self._engine = _Engine(EngineArgs(
            model_path=str(path), served_model_name=path.name, instance_id=0, max_model_len=self._max_seq_len,
            eos_token_ids=[eos] if isinstance(eos, int) else list(eos or []), vocab_size=int(cfg.get("vocab_size", 32000)),
            options=options))
        self._engine.on_step = self._on_step
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._results: dict[int, RequestOutput] = {}
        self._shutdown = False
        self._iter = 0
        self._completed = 0
        self._stats: asyncio.Queue[str] = asyncio.Queue()
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self._event_id = 0
        # per rank: parent TRT hash -> partial block hashes announced under it
        self._partials: list[dict[Optional[int], list[int]]] = [{} for _ in range(self._dp_size)]
        self._events_on = kv.enable_block_reuse and kv.event_buffer_max_size > 0
        if self._events_on:
            self._engine.set_kv_event_sink(self._on_kv_batch)
            for r in range(self._dp_size):
                self._push_event(r, {"type": "created", "num_blocks_per_cache_level": [self._num_blocks, 0]})

    # --- events / stats ------------------------------------------------------------------------------
    def _push_event(self, rank: int, data: dict) -> None:
        ev = {"event_id": self._event_id, "data": data, "window_size": self._max_seq_len}
        if self._attention_dp:
            ev["attention_dp_rank"] = rank
        self._event_id += 1
        q = self._events
        if q.qsize() >= self._kv_config.event_buffer_max_size:
            q.get_nowait()  # the executor's event buffer keeps the newest event_buffer_max_size events
        q.put_nowait(json.dumps(ev))

    def _on_kv_batch(self, batch: KvEventBatch) -> None:
        rank = batch.dp_rank
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                if ev.tier != "gpu":
                    continue
                bs = ev.block_size
                blocks = [{"type": "stored_block", "block_hash": _trt_hash(h),
                           "tokens": [{"type": "unique_token", "token_id": t, "token_extra_id": 0}
                                      for t in ev.token_ids[i * bs:(i + 1) * bs]],
                           "lora_id": None, "cache_level": 0, "priority": 35}
                          for i, h in enumerate(ev.block_hashes)]
                parent = None if ev.parent_block_hash is None else _trt_hash(ev.parent_block_hash)
                self._push_event(rank, {"type": "stored", "parent_hash": parent, "blocks": blocks})
            elif isinstance(ev, BlockRemoved):
                if ev.tier != "gpu":
                    continue
                hashes: list[int] = []
                for h in ev.block_hashes:
                    t = _trt_hash(h)
                    hashes.extend(self._partials[rank].pop(t, ()))
                    hashes.append(t)
                self._push_event(rank, {"type": "removed", "block_hashes": hashes})
            elif isinstance(ev, AllBlocksCleared):
                self._partials[rank].clear()

    def _store_partial(self, rank: int, tokens: list[int]) -> None:
        """A finished request's last, partly filled block enters the reuse tree too: announced as a stored block
        of fewer than tokens_per_block tokens (consumers drop it; its removal comes with its parent's)."""
        if not self._events_on:
            return
        bs = self._kv_config.tokens_per_block
        full = len(tokens) // bs
        rest = tokens[full * bs:]
        if not rest or full == 0:
            return
        parent = _trt_hash(block_hashes(tokens[:full * bs], bs)[-1])
        h = _partial_hash(parent, rest)
        lst = self._partials[rank].setdefault(parent, [])
        if h in lst:
            return
        lst.append(h)
        self._push_event(rank, {"type": "stored", "parent_hash": parent, "blocks": [
            {"type": "stored_block", "block_hash": h,
             "tokens": [{"type": "unique_token", "token_id": t, "token_extra_id": 0} for t in rest],
             "lora_id": None, "cache_level": 0, "priority": 35}]})

    def _on_step(self, rank: int, plan: Any) -> None:
        # Attention-DP ranks step together in TensorRT-LLM (one iteration, one stats record); the simulated ranks
        # step apart, so every rank's step stands for an iteration of the instance.
        if not self._iter_stats:
            return
        self._push_stats(len(plan.prefill), plan.decode_seqs, sum(n for n, _c, _s in plan.prefill))

    def _push_stats(self, ctx: int = 0, gen: int = 0, ctx_tokens: int = 0) -> None:
        if not self._iter_stats:
            return
        ranks = self._engine.ranks
        active = sum(len(s.running) for s in ranks)
        queued = sum(len(s.waiting) for s in ranks)
        used = sum(s.kv.active_blocks for s in ranks)
        total = sum(s.kv.num_blocks for s in ranks)
        hit = sum(s.hit_tokens for s in ranks)
        queried = sum(s.queried_tokens for s in ranks)
        bs = self._kv_config.tokens_per_block
        self._iter += 1
        stat = {
            "iter": self._iter, "iterLatencyMS": 0.0, "timestamp": time.strftime("%m-%d-%Y %H:%M:%S"),
            "numActiveRequests": active, "numQueuedRequests": queued, "numCompletedRequests": self._completed,
            "maxNumActiveRequests": self._max_batch_size, "maxBatchSizeStatic": self._max_batch_size,
            "maxBatchSizeRuntime": self._max_batch_size, "maxNumTokensRuntime": self._max_num_tokens,
            "gpuMemUsage": 0, "cpuMemUsage": 0, "pinnedMemUsage": 0,
            "kvCacheStats": {"maxNumBlocks": total, "freeNumBlocks": total - used, "usedNumBlocks": used,
                             "tokensPerBlock": bs, "allocTotalBlocks": used, "allocNewBlocks": 0,
                             "reusedBlocks": hit // bs, "missedBlocks": (queried - hit) // bs,
                             "cacheHitRate": hit / queried if queried else 0.0},
            "inflightBatchingStats": {"numScheduledRequests": ctx + gen, "numContextRequests": ctx,
                                      "numGenRequests": gen, "numPausedRequests": 0, "numCtxTokens": ctx_tokens,
                                      "microBatchId": 0, "avgNumDecodedTokensPerIter": 1.0},
        }
        if self._stats.qsize() >= 1000:
            self._stats.get_nowait()
        self._stats.put_nowait(json.dumps(stat))

    def get_stats_async(self, timeout: Optional[float] = 2) -> IterationResult:
        """Iteration statistics queued since the last call (needs enable_iter_perf_stats=True)."""
        return IterationResult(self._stats, timeout)

    def get_kv_cache_events_async(self, timeout: Optional[float] = 2) -> IterationResult:
        """KV cache events (needs KvCacheConfig(event_buffer_max_size > 0, enable_block_reuse=True))."""
        return IterationResult(self._events, timeout)

    # --- generation ------------------------------------------------------------------------------------
    def generate_async(self, inputs, sampling_params: Optional[SamplingParams] = None, lora_request=None,
                       prompt_adapter_request=None, streaming: bool = False, kv_cache_retention_config=None,
                       disaggregated_params=None, _postproc_params=None,
                       scheduling_params: Optional[SchedulingParams] = None, cache_salt: Optional[str] = None
                       ) -> RequestOutput:
        """Generate output for the given prompt in the asynchronous mode."""
        if self._shutdown:
            raise RuntimeError("LLM is shutting down")
        sp = sampling_params if sampling_params is not None else SamplingParams()
        if not isinstance(sp, SamplingParams):
            raise TypeError(f"The sampling_params must be type SamplingParams or None, but got {type(sp)}")
        if sp.end_id is None:
            raise ValueError("tokenizer is required to reset end_id if it is None, or you can explicitly specify "
                             "the end_id for sampling_params")
        if isinstance(inputs, dict) and "prompt_token_ids" in inputs:
            prompt = list(inputs["prompt_token_ids"])
        elif isinstance(inputs, list) and all(isinstance(t, int) for t in inputs):
            prompt = list(inputs)
        else:
            raise TypeError(f"The inputs must be type str or list of int, but got {type(inputs)}")
        for name, value in (("lora_request", lora_request), ("prompt_adapter_request", prompt_adapter_request),
                            ("kv_cache_retention_config", kv_cache_retention_config),
                            ("disaggregated_params", disaggregated_params), ("cache_salt", cache_salt),
                            ("_postproc_params", _postproc_params)):
            if value is not None:
                raise NotImplementedError(f"fake tensorrt_llm: {name} is not modelled")
        if sp.use_beam_search or sp.best_of != sp.n or sp.guided_decoding is not None or sp.stop or sp.bad \
                or sp.bad_token_ids or sp.logits_processor is not None or sp.prompt_logprobs:
            raise NotImplementedError("fake tensorrt_llm: beam search, best_of > n, guided decoding, stop / bad "
                                      "words, logits processors and prompt logprobs are not modelled")
        if not self._chunked and len(prompt) > self._max_num_tokens:
            raise ValueError(f"The sum of prompt length ({float(len(prompt))}), query length (0) should not exceed "
                             f"max_num_tokens ({self._max_num_tokens})")
        rank = None
        if scheduling_params is not None and scheduling_params.attention_dp_rank is not None:
            rank = scheduling_params.attention_dp_rank
            if not 0 <= rank < self._dp_size:
                raise ValueError(f"attention_dp_rank {rank} out of range ({self._dp_size} attention DP ranks)")
        rid = next(self._ids)
        result = RequestOutput(rid, prompt, sp, streaming, self._abort)
        self._results[rid] = result
        loop = asyncio.get_running_loop()
        for i in range(sp.best_of):
            req = EngineRequest(
                request_id=f"trt-{rid}", token_ids=prompt, choice_index=i, dp_rank=rank,
                sampling=_OurSampling(temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k, min_p=sp.min_p,
                                      seed=sp.seed, logprobs=sp.logprobs or None),
                stop=StopConditions(max_tokens=sp.max_tokens, min_tokens=sp.min_tokens or 0,
                                    stop_token_ids=list(sp.stop_token_ids or ()),
                                    eos_token_ids=[sp.end_id], ignore_eos=sp.ignore_eos))
            task = loop.create_task(self._drive(result, i, req, sp))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return result

    async def _drive(self, result: RequestOutput, index: int, req: EngineRequest, sp: SamplingParams) -> None:
        bs = self._kv_config.tokens_per_block
        cum = 0.0
        generated: list[int] = []
        perf = None
        try:
            async for eo in self._engine.generate(req):
                lps = None
                if sp.logprobs and eo.token_ids:
                    lps = []
                    for tl in eo.logprobs or ():
                        entry = {tid: Logprob(lp, rank) for rank, (tid, lp) in enumerate(tl.top[:sp.logprobs], 1)}
                        if tl.token_id not in entry:
                            entry[tl.token_id] = Logprob(tl.logprob, len(entry) + 1)
                        lps.append(entry)
                        cum += tl.logprob
                if eo.cached_tokens is not None and (sp.return_perf_metrics or self._perf_metrics):
                    n = (len(req.token_ids) + bs - 1) // bs
                    reused = eo.cached_tokens // bs
                    perf = RequestPerfMetrics(KvCacheMetrics(n, n - reused, reused, n - reused,
                                                             reused / n if n else 0.0))
                generated.extend(eo.token_ids)
                fin = eo.finish_reason
                reason = stop_tok = err = None
                if fin == "stop":
                    if eo.stop_token_id is not None and eo.stop_token_id in (sp.stop_token_ids or ()) \
                            and eo.stop_token_id != sp.end_id:
                        reason, stop_tok = "stop_words", eo.stop_token_id
                    else:
                        reason = "end_id"
                elif fin == "length":
                    reason = "length"
                elif fin == "abort":
                    reason = "cancelled"
                elif fin == "error":
                    err = eo.error or "request failed"
                result.aqueue.put_nowait(Response(index, list(eo.token_ids), lps, cum if lps is not None else None,
                                                  reason, stop_tok, perf, err))
                if fin is not None:
                    if fin in ("stop", "length"):
                        self._completed += 1
                        # computed KV: the prompt and every generated token but the last sampled one
                        self._store_partial(req.dp_rank or 0, req.token_ids + generated[:-1])
                    elif fin == "abort":
                        self._push_stats()  # the iteration that processed the cancellation
                    break
        finally:
            if result.finished or all(o.finish_reason for o in result._outputs):
                self._results.pop(result.id, None)

    def _abort(self, request_id: int) -> None:
        result = self._results.get(request_id)
        if result is None or result.finished:
            return
        task = asyncio.get_running_loop().create_task(self._engine.abort(f"trt-{request_id}"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def shutdown(self) -> None:
        """Stop the engine: requests in flight end with an error."""
        if self._shutdown:
            return
        self._shutdown = True
        for rank, sched in enumerate(self._engine.ranks):
            for seq in sched.drain():
                seq.fail("LLM is shutting down")
                seq.wake()
