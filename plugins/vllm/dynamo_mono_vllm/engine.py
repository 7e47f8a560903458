"""VllmEngine: one dynamo-mono engine instance over vLLM's AsyncLLM (token in, token out, KV events out)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, AsyncIterator

from dynamo_mono.api import (
    ConfigError,
    EmbeddingOutput,
    EmbeddingRequest,
    EngineArgs,
    EngineError,
    RequestRejected,
    EngineOutput,
    EngineRequest,
    KvEventBatch,
    KvEventSink,
    LoadMetrics,
    LoraAdapter,
    MediaTokens,
    ModelCard,
    TokenLogprob,
)

from dynamo_mono_vllm.disagg import (
    PREFILL_PARAMS,
    TRANSPORT,
    free_port,
    side_channel_env,
    transfer_from_vllm,
    transfer_to_vllm,
)
from dynamo_mono_vllm.engine_args import build_engine_args
from dynamo_mono_vllm.kv_listener import TOPIC, KvEventListener
from dynamo_mono_vllm.load import LoadRecorder
from dynamo_mono_vllm.lora import LoraSet, adapter_mismatch
from dynamo_mono_vllm.media import MEDIA_KINDS, MediaError, expansion_mismatch, vllm_prompt
from dynamo_mono_vllm.placeholders import placeholder_spec, with_processor_kwargs
from dynamo_mono_vllm.sampling import sampling_params

log = logging.getLogger("dynamo_mono.vllm")

_FINISH = {"stop": "stop", "length": "length", "abort": "abort", "error": "error"}


def _logprobs(token_ids: list[int], lps: Any, n_top: int) -> list[TokenLogprob]:
    """Our TokenLogprob list from vLLM's per-position {token_id: Logprob} entries (DELTA output)."""
    out: list[TokenLogprob] = []
    for j, tok in enumerate(token_ids):
        entry = lps[j] if lps is not None and j < len(lps) else None
        if not entry:
            out.append(TokenLogprob(tok, 0.0))
            continue
        sampled = entry.get(tok)
        ranked = sorted(((lp.rank, tid, lp.logprob) for tid, lp in entry.items() if lp.rank is not None),
                        key=lambda x: x[0])
        top = [(tid, lp) for rank, tid, lp in ranked if rank <= n_top][:n_top]
        out.append(TokenLogprob(tok, sampled.logprob if sampled is not None else float("-inf"), top))
    return out


def _client_error() -> type[Exception]:
    """vLLM's exception for invalid request parameters (VLLMValidationError's base), ValueError before it existed."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return ValueError
    return VLLMClientError


def _causes(exc: BaseException) -> list[BaseException]:
    """exc and the chain of exceptions it was raised from."""
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 16:
        chain.append(chain[-1].__cause__)
    return chain


def _refused(exc: BaseException) -> bool:
    """vLLM refused the request itself (bad parameters, media its processor rejects): retrying elsewhere is futile.

    AsyncLLM wraps errors of its input processing (the multimodal processor's ValueError on an image it cannot
    take) in a bare EngineGenerateError: the causes say what happened."""
    client = (ValueError, TypeError, _client_error())
    if isinstance(exc, client):
        return True
    return type(exc).__name__ == "EngineGenerateError" and any(isinstance(c, client) for c in _causes(exc)[1:])


def _reason(exc: BaseException, limit: int = 300) -> str:
    """The root cause's message, short: vLLM's processor errors quote the whole input (pixel arrays) on the way."""
    root = _causes(exc)[-1]
    msg = str(root) or type(root).__name__
    return msg if len(msg) <= limit else msg[:limit] + "..."


class VllmEngine:
    """An engine instance: an AsyncLLM (its own EngineCore process) plus a KV-event subscriber; with --enable-lora
    it serves LoRA adapters (load_lora / unload_lora / list_loras, EngineRequest.lora_name)."""

    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.options = args.options or {}
        self.instance_id = args.instance_id
        self.engine_args = build_engine_args(args)
        ea = self.engine_args
        self.dp_size: int = int(ea.data_parallel_size or 1)
        self.priority: bool = ea.scheduling_policy == "priority"
        self.kind = args.kind
        # Embedding requests are routed by load alone (no prefix to match): KV events would feed nothing.
        self.kv_events_on: bool = bool(self.options.get("vllm_kv_events", True)) and bool(
            ea.enable_prefix_caching is not False) and self.kind == "chat"
        self.llm: Any = None
        self.listener: KvEventListener | None = None
        self.recorder = LoadRecorder(self.dp_size)
        self._card: ModelCard | None = None
        self._stopped = True
        self._seq = itertools.count()
        self._eos: set[int] = set(args.eos_token_ids or ())
        self._live: set[str] = set()  # vLLM request ids in flight ("<request_id>#<n>")
        # Input media the model takes -> how the server counts an item's placeholder tokens (MediaTokens fields).
        self.media_input: dict[str, dict[str, Any]] = {}
        self.loras = LoraSet()
        # Disaggregation role (vLLM NixlConnector when not "agg"; build_engine_args set kv_transfer_config).
        self.mode: str = self.options.get("disaggregation_mode") or "agg"
        self.side_channel: tuple[str, int] | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        from vllm.config import KVEventsConfig
        from vllm.v1.engine.async_llm import AsyncLLM

        ea = self.engine_args
        if self.kv_events_on:
            self.listener = KvEventListener(self.instance_id, self.dp_size)
            ea.kv_events_config = KVEventsConfig(enable_kv_cache_events=True, publisher="zmq",
                                                 endpoint=self.listener.endpoint, topic=TOPIC)
            self.listener.start()
        # Blocks the loop while the EngineCore process loads the model: startup only, before serving.
        if self.mode == "agg":
            self.llm = AsyncLLM.from_engine_args(ea, stat_loggers=[self.recorder.factory()])
        else:
            host = self.options.get("kv_transfer_host") or "127.0.0.1"
            port = self.options.get("kv_transfer_port") or free_port(host)
            self.side_channel = (host, port)
            with side_channel_env(host, port):
                self.llm = AsyncLLM.from_engine_args(ea, stat_loggers=[self.recorder.factory()])
        runner = self.llm.vllm_config.model_config.runner_type
        if (runner == "pooling") != (self.kind == "embedding"):
            await self.stop()
            raise ConfigError(f"vLLM runs {self.args.model_path} on its {runner} runner, which does not serve "
                              f"{self.kind} models; start it with --model-kind "
                              f"{'embedding' if runner == 'pooling' else 'chat'}")
        self.media_input = self._media_input()
        self._card = self._build_card()
        self._stopped = False
        log.info("vLLM instance %d ready: block size %d, %s KV blocks, KV events %s, disaggregation %s%s",
                 self.instance_id, self._card.block_size, self._card.total_kv_blocks,
                 self.listener.endpoint if self.listener else "off", self.mode,
                 f" (NIXL side channel {self.side_channel[0]}:{self.side_channel[1]})" if self.side_channel else "")

    async def stop(self) -> None:
        self._stopped = True
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    def _media_input(self) -> dict[str, dict[str, Any]]:
        """The media vLLM takes for this model (its multimodal processor's modalities with a per-prompt limit above
        0, see --limit-mm-per-prompt) whose placeholder count this plugin knows (placeholders.py)."""
        mc = self.llm.vllm_config.model_config
        if self.kind != "chat" or not mc.is_multimodal_model:
            return {}
        from vllm.multimodal import MULTIMODAL_REGISTRY

        limits = MULTIMODAL_REGISTRY.get_processing_info(mc).allowed_mm_limits
        spec = with_processor_kwargs(placeholder_spec(self.args.model_path),
                                     mc.multimodal_config.mm_processor_kwargs if mc.multimodal_config else None)
        taken = {kind: spec[kind] for kind in MEDIA_KINDS if limits.get(kind, 0) > 0 and kind in spec}
        unknown = [kind for kind in MEDIA_KINDS if limits.get(kind, 0) > 0 and kind not in spec]
        if unknown:
            log.warning("vLLM takes %s input for %s (%s), but dynamo-mono cannot count its placeholder tokens: "
                        "served without %s input", "/".join(unknown), self.args.model_path,
                        mc.hf_config.model_type, "/".join(unknown))
        return taken

    def _build_card(self) -> ModelCard:
        cfg = self.llm.vllm_config
        cache = cfg.cache_config
        sched = cfg.scheduler_config
        mc = cfg.model_config
        embedding = self.kind == "embedding"
        lora = getattr(cfg, "lora_config", None)  # vLLM's LoRAConfig with --enable-lora
        mds = mc.matryoshka_dimensions if embedding else None
        return ModelCard(
            name=self.args.served_model_name,
            max_model_len=cfg.model_config.max_model_len,
            block_size=cache.block_size,
            dp_size=self.dp_size,
            total_kv_blocks=cache.num_gpu_blocks,
            max_num_seqs=sched.max_num_seqs,
            max_num_batched_tokens=sched.max_num_batched_tokens,
            reasoning_parser=self.args.reasoning_parser,
            tool_call_parser=self.args.tool_call_parser,
            eos_token_ids=list(self.args.eos_token_ids or []),
            supports_priority=self.priority,
            priority_higher_is_urgent=False,
            supports_logprobs=not embedding,
            kv_events=self.listener is not None,
            modalities=["text", *self.media_input],
            media_input={kind: MediaTokens(**spec) for kind, spec in self.media_input.items()},
            kind=self.kind,
            embedding_dim=mc.embedding_size if embedding else None,
            matryoshka=embedding and bool(mc.is_matryoshka),
            matryoshka_dimensions=[int(d) for d in mds] if mds else None,
            supports_lora=lora is not None,
            max_loras=lora.max_loras if lora is not None else 0,
            max_lora_rank=lora.max_lora_rank if lora is not None else 0,
            disaggregation_mode=self.mode,
        )

    def model_card(self) -> ModelCard:
        if self._card is None:
            raise RuntimeError("vLLM engine not started")
        return self._card

    def healthy(self) -> bool:
        return not self._stopped and self.llm is not None and not self.llm.errored

    # --- KV events / metrics -----------------------------------------------------------------------
    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        if self.listener is not None:
            self.listener.sink = sink

    def kv_snapshot(self) -> list[KvEventBatch]:
        return self.listener.snapshot() if self.listener is not None else []

    def load_metrics(self) -> list[LoadMetrics]:
        rec = self.recorder
        total = self._card.total_kv_blocks if self._card else 0
        # Aborted requests leave the frontend at once, but the scheduler only reports again on its next
        # step: cap the scheduler's count by the requests the frontend still tracks.
        unfinished = self.llm.output_processor.get_num_unfinished_requests() if self.llm is not None else 0
        out = []
        for r in range(self.dp_size):
            running = min(rec.running[r], unfinished)
            waiting = min(rec.waiting[r], max(0, unfinished - running))
            hit = rec.hit_tokens[r] / rec.query_tokens[r] if rec.query_tokens[r] else 0.0
            out.append(LoadMetrics(dp_rank=r, running=running, waiting=waiting,
                                   kv_active_blocks=round(rec.kv_usage[r] * (total or 0)),
                                   kv_total_blocks=total or 0, prefix_hit_rate=hit,
                                   preemptions=rec.preemptions[r],
                                   kv_transfer_bytes=rec.kv_bytes if r == 0 else 0,
                                   kv_transfer_failures=rec.kv_failures if r == 0 else 0))
        return out

    # --- LoRA adapters -------------------------------------------------------------------------------
    async def load_lora(self, adapter: LoraAdapter) -> None:
        """AsyncLLM.add_lora(LoRARequest(name, id, path)), once per name. vLLM checks the adapter's config (rank
        against --max-lora-rank, features it lacks, target modules) and reads its weights; the width check against
        the base model is ours (vLLM serves an adapter of another model's sizes)."""
        from vllm.lora.request import LoRARequest

        name = adapter.name
        if self._card is None or not self._card.supports_lora:
            raise EngineError("vllm: LoRA adapters are off on this instance (start it with --enable-lora)",
                              retryable=False)
        async with self.loras.lock(name):
            have = self.loras.loaded.get(name)
            if have is not None:
                if have.lora_int_id == adapter.lora_id and have.lora_path == adapter.path:
                    return
                raise EngineError(f"vllm: adapter {name!r} is loaded from {have.lora_path} (id {have.lora_int_id});"
                                  f" unload it first", retryable=False)
            other = self.loras.by_id(adapter.lora_id)
            if other is not None:  # vLLM keys adapters by id: the second would serve the first's weights
                raise EngineError(f"vllm: adapter id {adapter.lora_id} of {name!r} is already {other!r}'s",
                                  retryable=False)
            why = await asyncio.to_thread(adapter_mismatch, adapter.path, self.args.model_path)
            if why is not None:
                raise EngineError(f"vllm: adapter {name!r} does not fit {self.args.model_path}: {why}",
                                  retryable=False)
            req = LoRARequest(name, adapter.lora_id, adapter.path)
            if self.llm is None or self._stopped:
                raise EngineError("vllm: engine is not running")
            try:  # vLLM's worker validates the config and reads the weights
                await self.llm.add_lora(req)
            except Exception as exc:  # vLLM's worker refused the files; the engine itself stays up
                raise EngineError(f"vllm: adapter {name!r}: {_reason(exc)}",
                                  retryable=bool(self.llm is None or self.llm.errored)) from None
            self.loras.loaded[name] = req
            log.info("vLLM instance %d: LoRA adapter %r (id %d) loaded from %s", self.instance_id, name,
                     adapter.lora_id, adapter.path)

    async def unload_lora(self, name: str) -> None:
        """New requests for the adapter are refused at once; vLLM forgets it (remove_lora) once the requests
        already running with it have finished."""
        async with self.loras.lock(name):
            req = self.loras.loaded.pop(name, None)
            if req is None:
                return
            await self.loras.drained(name)
            if self.llm is not None:
                await self.llm.remove_lora(req.lora_int_id)
            log.info("vLLM instance %d: LoRA adapter %r unloaded", self.instance_id, name)

    def list_loras(self) -> list[str]:
        return list(self.loras.loaded)

    # --- requests ------------------------------------------------------------------------------------
    async def abort(self, request_id: str) -> None:
        if self.llm is not None:
            await self.llm.abort([rid for rid in list(self._live) if rid.startswith(request_id + "#")])

    async def embed(self, request: EmbeddingRequest) -> EmbeddingOutput:
        """Each input as one vLLM pooling request (embed task), all at once: vLLM batches them in its steps."""
        if self.kind != "embedding":
            raise EngineError("vllm: this instance serves a chat model, not embeddings", retryable=False)
        if self.llm is None or self._stopped:
            raise EngineError("vllm: engine is not running")
        import torch

        base = f"{request.request_id}#{next(self._seq)}"
        tasks = [asyncio.ensure_future(self._embed_one(f"{base}.{i}", ids, request))
                 for i, ids in enumerate(request.token_ids)]
        try:
            outs = await asyncio.gather(*tasks)
        except (ValueError, TypeError, _client_error()) as exc:  # vLLM refused the request itself
            raise RequestRejected(f"vllm: {exc}") from None
        except EngineError:
            raise
        except Exception as exc:  # engine death and the like: another instance may serve it
            log.warning("vLLM embedding request %s failed: %s", base, exc)
            raise EngineError(f"vllm: {type(exc).__name__}: {exc}") from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        vectors = torch.stack([o.outputs.data for o in outs]).to("cpu", torch.float32).numpy()
        return EmbeddingOutput(vectors, sum(len(o.prompt_token_ids or ()) for o in outs))

    async def _embed_one(self, rid: str, token_ids: list[int], request: EmbeddingRequest) -> Any:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        # AsyncLLM.encode takes no data_parallel_rank (vLLM 0.32): with dp > 1, vLLM balances pooling requests.
        kw: dict[str, Any] = {"priority": request.priority} if self.priority else {}
        params = PoolingParams(task="embed", dimensions=request.dimensions)
        self._live.add(rid)
        try:
            final = None
            async for out in self.llm.encode(TokensPrompt(prompt_token_ids=list(token_ids)), params, rid, **kw):
                final = out
            if final is None or not final.finished:
                raise EngineError(f"vllm: pooling request {rid} ended without a result")
            return final
        finally:
            self._live.discard(rid)

    def _kv_transfer_params(self, request: EngineRequest) -> dict[str, Any] | None:
        """vLLM's kv_transfer_params for request: export the prompt's KV (prefill side), pull it (decode side)."""
        if self.mode == "agg":
            if request.kv_transfer is not None or request.kv_export_key is not None:
                log.warning("request %s: KV transfer asked of an aggregated vLLM instance: computing it locally",
                            request.request_id)
                self.recorder.kv_failures += request.kv_transfer is not None
            return None
        if request.kv_transfer is not None:
            t = request.kv_transfer
            if t.endpoint.transport != TRANSPORT or not t.block_ids:
                log.warning("request %s: KV offered over %s, this instance reads %s: prefilling locally",
                            request.request_id, t.endpoint.transport, TRANSPORT)
                self.recorder.kv_failures += 1
                return None
            return transfer_to_vllm(t)
        if request.kv_export_key is not None:
            return dict(PREFILL_PARAMS)  # vLLM marks the dict it is handed
        return None

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream vLLM's DELTA outputs; closing this generator (client gone) aborts the vLLM request."""
        if self.kind != "chat":
            raise EngineError("vllm: this instance serves an embedding model; it does not generate",
                              retryable=False)
        if self.llm is None or self._stopped:
            yield EngineOutput(finish_reason="error", error="vllm: engine is not running",
                               prompt_tokens=len(request.token_ids), cached_tokens=0)
            return
        media = request.media
        try:
            params = sampling_params(request)
            if media:
                refused = [m.kind for m in media if m.kind not in self.media_input]
                if refused:
                    raise MediaError(f"this model takes no {'/'.join(sorted(set(refused)))} input")
            prompt = vllm_prompt(request.token_ids, media)
        except (ValueError, TypeError, _client_error()) as exc:  # the request's own parameters: no migration
            raise RequestRejected(f"vllm: {exc}") from None
        kvp = self._kv_transfer_params(request)
        if kvp is not None:
            params.extra_args = {**(params.extra_args or {}), "kv_transfer_params": kvp}
        exporting = kvp is not None and kvp.get("do_remote_decode") is True
        rid = f"{request.request_id}#{next(self._seq)}"
        kw: dict[str, Any] = {}
        if self.priority:
            kw["priority"] = request.priority
        if request.dp_rank is not None and self.dp_size > 1:
            kw["data_parallel_rank"] = request.dp_rank
        n_top = request.sampling.logprobs
        stop_ids = self._eos | set(request.stop.eos_token_ids) | set(request.stop.stop_token_ids)
        lora_name = request.lora_name
        if lora_name is not None:  # held until the finally below: an unload waits for it
            kw["lora_request"] = self.loras.acquire(lora_name)
            if kw["lora_request"] is None:
                raise EngineError(f"vllm: LoRA adapter {lora_name!r} is not loaded on this instance",
                                  retryable=False)
        live = self._live
        live.add(rid)
        finished = False
        first = True
        try:
            async for out in self.llm.generate(prompt, params, rid, **kw):
                comp = out.outputs[0]
                toks = list(comp.token_ids)
                eo = EngineOutput(token_ids=toks)
                if n_top is not None and toks:
                    eo.logprobs = _logprobs(toks, comp.logprobs, n_top)
                if first:
                    first = False
                    if media:
                        wrong = expansion_mismatch(request.token_ids, out.prompt_token_ids, media)
                        if wrong is not None:  # the finally below aborts the vLLM request
                            raise EngineError(f"vllm: {wrong}", retryable=False)
                    eo.prompt_tokens = len(request.token_ids)
                    eo.cached_tokens = out.num_cached_tokens or 0
                if out.finished:
                    finished = True
                    reason = _FINISH.get(comp.finish_reason or "stop", "stop")
                    if reason == "stop" and toks and not isinstance(comp.stop_reason, str) \
                            and toks[-1] in stop_ids:
                        # vLLM keeps the EOS / stop token in token_ids; our convention reports it apart.
                        eo.stop_token_id = toks.pop()
                        if eo.logprobs:
                            eo.logprobs.pop()
                    eo.finish_reason = reason
                    if exporting:
                        eo.kv_transfer = transfer_from_vllm(out.kv_transfer_params)
                yield eo
                if finished:
                    return
        except (asyncio.CancelledError, EngineError):
            raise
        except Exception as exc:  # engine death / validation failures end this request with an error
            finished = True
            log.warning("vLLM request %s failed: %s", rid, _reason(exc))
            if first and _refused(exc):  # vLLM refused the request itself
                raise RequestRejected(f"vllm: {_reason(exc)}") from None
            yield EngineOutput(finish_reason="error", error=f"vllm: {type(exc).__name__}: {_reason(exc)}",
                               prompt_tokens=len(request.token_ids), cached_tokens=0)
        finally:
            live.discard(rid)
            if lora_name is not None:
                self.loras.release(lora_name)
            if not finished and self.llm is not None:
                await self.llm.abort(rid)
