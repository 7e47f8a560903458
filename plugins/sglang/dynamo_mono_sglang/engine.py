"""SglangEngine: one dynamo-mono engine instance over an in-process sglang.Engine (token in, token out, KV events)."""

from __future__ import annotations

import itertools
import logging
from typing import Any, AsyncIterator

from dynamo_mono.api import (
    EngineArgs,
    EngineError,
    EngineOutput,
    EngineRequest,
    KvEventBatch,
    KvEventSink,
    LoadMetrics,
    ModelCard,
)

from dynamo_mono_sglang.kv_listener import KvEventListener
from dynamo_mono_sglang.load import LoadPoller
from dynamo_mono_sglang.outputs import to_output
from dynamo_mono_sglang.sampling import Refused, sampling_params
from dynamo_mono_sglang.server_args import build_server_args

log = logging.getLogger("dynamo_mono.sglang")


class SglangEngine:
    """An engine instance: sglang.Engine (its scheduler / detokenizer processes) plus a KV-event subscriber and a
    load poller. Chat models only; media input and LoRA are refused (card and startup)."""

    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.options = args.options or {}
        self.instance_id = args.instance_id
        self.dp_size = int(self.options.get("dp_size") or 1)
        self.page_size = int(self.options.get("page_size") or 16)
        self.priority = bool(self.options.get("enable_priority_scheduling"))
        self.kv_events_on = bool(self.options.get("sglang_kv_events", True)) and not self.options.get(
            "disable_radix_cache")
        self.listener: KvEventListener | None = None
        self.loads = LoadPoller(self.dp_size, self.page_size, float(self.options.get("sglang_load_poll_ms", 50)) / 1e3)
        self.engine: Any = None
        self._card: ModelCard | None = None
        self._stopped = True
        self._seq = itertools.count()
        self._eos = list(args.eos_token_ids or ())
        self._live: set[str] = set()
        # Validated now (no SGLang process yet): a bad flag fails `serve` before any model loads.
        self.server_args = build_server_args(args, "tcp://127.0.0.1:0" if self.kv_events_on else None)

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        import sglang

        if self.kv_events_on:
            self.listener = KvEventListener(self.instance_id, self.dp_size)
            self.server_args = build_server_args(self.args, self.listener.endpoint)
            self.listener.start()
        # Blocks the loop while SGLang starts its scheduler processes and loads the model: startup only.
        self.engine = sglang.Engine(server_args=self.server_args)
        tm = self.engine.tokenizer_manager
        await self.loads.refresh(tm)
        self.loads.start(tm)
        total = self.loads.total_tokens // self.page_size
        self._card = ModelCard(
            name=self.args.served_model_name,
            max_model_len=int(tm.context_len),
            block_size=self.page_size,
            dp_size=self.dp_size,
            total_kv_blocks=total or None,
            max_num_seqs=self.options.get("max_running_requests"),
            reasoning_parser=self.args.reasoning_parser,
            tool_call_parser=self.args.tool_call_parser,
            eos_token_ids=list(self._eos),
            supports_priority=self.priority,
            priority_higher_is_urgent=not self.options.get("schedule_low_priority_values_first"),
            supports_logprobs=True,
            kv_events=self.listener is not None,
            kind="chat",
        )
        self._stopped = False
        log.info("SGLang instance %d ready: page size %d, %d KV tokens, dp %d, KV events %s", self.instance_id,
                 self.page_size, self.loads.total_tokens, self.dp_size,
                 self.listener.endpoint if self.listener else "off")

    async def stop(self) -> None:
        self._stopped = True
        await self.loads.stop()
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    def model_card(self) -> ModelCard:
        if self._card is None:
            raise RuntimeError("SGLang engine not started")
        return self._card

    def healthy(self) -> bool:
        return not self._stopped and self.engine is not None

    # --- KV events / metrics -----------------------------------------------------------------------
    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        if self.listener is not None:
            self.listener.sink = sink

    def kv_snapshot(self) -> list[KvEventBatch]:
        return self.listener.snapshot() if self.listener is not None else []

    def load_metrics(self) -> list[LoadMetrics]:
        return list(self.loads.metrics)

    # --- requests ------------------------------------------------------------------------------------
    async def abort(self, request_id: str) -> None:
        if self.engine is None:
            return
        for rid in [r for r in list(self._live) if r.startswith(request_id + "#")]:
            self.engine.tokenizer_manager.abort_request(rid=rid)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream SGLang's incremental chunks; closing this generator (client gone) aborts the SGLang request."""
        if self.engine is None or self._stopped:
            yield EngineOutput(finish_reason="error", error="sglang: engine is not running",
                               prompt_tokens=len(request.token_ids), cached_tokens=0)
            return
        if request.media:
            raise EngineError("sglang: media input is not supported by this plugin yet", retryable=False)
        if request.lora_name is not None:
            raise EngineError("sglang: LoRA adapters are not supported by this plugin yet", retryable=False)
        if request.kv_transfer is not None or request.kv_export_key is not None:
            raise EngineError("sglang: dynamo-mono disaggregation is not wired to SGLang", retryable=False)
        try:
            params = sampling_params(request, self._eos)
        except Refused as exc:
            raise EngineError(str(exc), retryable=False) from None
        n_top = request.sampling.logprobs
        kw: dict[str, Any] = {}
        if n_top is not None:
            kw.update(return_logprob=True, top_logprobs_num=n_top, logprob_start_len=-1)
        if self.priority:
            kw["priority"] = request.priority
        if request.dp_rank is not None and self.dp_size > 1:
            kw["routed_dp_rank"] = request.dp_rank
        rid = f"{request.request_id}#{next(self._seq)}"
        stop_ids = set(params.get("stop_token_ids") or ())
        self._live.add(rid)
        finished = False
        first = True
        stream: Any = None
        try:
            try:
                stream = await self.engine.async_generate(input_ids=list(request.token_ids), sampling_params=params,
                                                          stream=True, rid=rid, **kw)
            except ValueError as exc:  # SGLang refused the request itself (its validation)
                raise EngineError(f"sglang: {exc}", retryable=False) from None
            async for chunk in stream:
                eo = to_output(chunk, first=first, prompt_len=len(request.token_ids), n_top=n_top,
                               stop_ids=stop_ids)
                first = False
                if eo.finish_reason is not None:
                    finished = True
                yield eo
                if finished:
                    return
            finished = True
            yield EngineOutput(finish_reason="error", error="sglang: stream ended without a finish reason")
        except (GeneratorExit, EngineError):
            raise
        except ValueError as exc:  # raised by SGLang's validation while iterating (first chunk)
            finished = True
            if first:
                raise EngineError(f"sglang: {exc}", retryable=False) from None
            yield EngineOutput(finish_reason="error", error=f"sglang: {exc}")
        except Exception as exc:  # engine death ends this request with an error (the pool may migrate it)
            finished = True
            log.warning("SGLang request %s failed: %s", rid, exc)
            yield EngineOutput(finish_reason="error", error=f"sglang: {type(exc).__name__}: {exc}",
                               prompt_tokens=len(request.token_ids) if first else None,
                               cached_tokens=0 if first else None)
        finally:
            self._live.discard(rid)
            if not finished and self.engine is not None:
                self.engine.tokenizer_manager.abort_request(rid=rid)
            if stream is not None:
                await stream.aclose()
