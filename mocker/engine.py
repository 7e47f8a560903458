"""MockerEngine: the Engine protocol over N simulated dp ranks (scheduler + KV pool + step loop each)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator

import numpy as np

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import (
    EmbeddingOutput,
    EmbeddingRequest,
    EngineArgs,
    EngineError,
    LoraAdapter,
    EngineOutput,
    EngineRequest,
    KvEventSink,
    KvTransferParams,
    LoadMetrics,
    MediaItem,
    ModelCard,
    TokenLogprob,
)
from dynamo_mono.block_hash import MediaSpan, block_hashes, block_media
from dynamo_mono.kv_events import KvEventBatch
from mocker.disagg import DisaggAgent, import_blocks
from mocker.faults import InstanceFaults, parse_annotations, parse_instances
from mocker.kv_manager import KvManager
from mocker.kv_tiers import tier_config
from mocker.lora import LoraSlots
from mocker.embedding import EmbedScheduler, HashedEmbedder
from mocker.encoder import EncoderCache, MediaEncoder
from mocker.media_input import media_input
from mocker.options import CHAT_ONLY_OPTIONS, EMBEDDING_ONLY_OPTIONS, MOCKER_OPTIONS
from mocker.outputs import (
    ordinary_token_ids,
    OutputMode,
    TokenSource,
    build_text,
    eos_length,
    logprobs_for,
    parse_output_mode,
    request_seed,
)
from mocker.perf_model import PerfModel, load_profile
from mocker.scheduler import Scheduler, StepPlan
from mocker.sequence import FINISHED, Sequence

log = logging.getLogger("dynamo_mono.mocker")

_DEFAULTS = {o.name: o.default for o in MOCKER_OPTIONS}
_CATCH_UP_S = 0.003


def validate_options(opts: dict[str, Any], max_model_len: int) -> None:
    """Cross-field checks the per-option bounds cannot express; ConfigError with one line."""
    bs = opts["block_size"]
    budget = opts["max_num_batched_tokens"]
    if not opts["enable_chunked_prefill"]:
        if budget < bs:
            raise ConfigError(f"--max-num-batched-tokens={budget} must be >= --block-size={bs} "
                              f"when chunked prefill is off")
        if max_model_len and budget < max_model_len:
            raise ConfigError(f"--max-num-batched-tokens={budget} must be >= max model len {max_model_len} "
                              f"when chunked prefill is off (use --enable-chunked-prefill)")
    for tier in ("host", "disk"):
        if opts[f"kv_{tier}_blocks"] and opts[f"kv_{tier}_gb"]:
            raise ConfigError(f"--kv-{tier}-blocks and --kv-{tier}-gb both size the {tier} tier: give one")
    tiered = any(opts[k] for k in ("kv_host_blocks", "kv_disk_blocks", "kv_host_gb", "kv_disk_gb"))
    if tiered and not opts["enable_prefix_caching"]:
        raise ConfigError("--kv-host-* / --kv-disk-* offload cached blocks: they need prefix caching "
                          "(drop --no-enable-prefix-caching)")
    if opts["speedup_ratio"] and opts["speedup_ratio"] < 0:
        raise ConfigError(f"--speedup-ratio={opts['speedup_ratio']} must be >= 0")


def validate_kind_options(opts: dict[str, Any], kind: str) -> None:
    """ConfigError naming an option set (away from its default) that the model's kind does not act on."""
    other = CHAT_ONLY_OPTIONS if kind == "embedding" else EMBEDDING_ONLY_OPTIONS
    for name in other:
        if opts[name] != _DEFAULTS[name]:
            raise ConfigError(f"--{name.replace('_', '-')}={opts[name]!r} does not apply to the mocker's {kind} "
                              f"models (only to {'chat' if kind == 'embedding' else 'embedding'} models)")


class MockerEngine:
    """A simulated vLLM-like engine instance; see the mocker package modules for each part."""

    def __init__(self, args: EngineArgs, *, perf_model: PerfModel | None = None) -> None:
        opts = dict(_DEFAULTS)
        opts.update({k: v for k, v in (args.options or {}).items() if k in _DEFAULTS and v is not None})
        validate_options(opts, args.max_model_len)
        validate_kind_options(opts, args.kind)
        self.args = args
        self.kind = args.kind
        self.opts = opts
        self.instance_id = args.instance_id
        self.block_size: int = opts["block_size"]
        self.num_blocks: int = opts["num_gpu_blocks_override"]
        self.dp_size: int = opts["data_parallel_size"]
        self.speedup: float = float(opts["speedup_ratio"])
        self.prefix_caching: bool = bool(opts["enable_prefix_caching"])
        self.chunked: bool = bool(opts["enable_chunked_prefill"])
        if perf_model is not None:
            self.perf = perf_model
        elif opts["planner_profile_data"]:
            self.perf = load_profile(opts["planner_profile_data"])
        else:
            self.perf = PerfModel()
        self.mode: OutputMode = parse_output_mode(opts["mocker_output"])
        self.tokenizer = args.tokenizer
        if self.mode.kind != "random" and self.tokenizer is None:
            raise ConfigError(f"--mocker-output={opts['mocker_output']} needs a tokenizer")
        if self.mode.kind in ("reasoning", "tool-calls") or (
                self.mode.kind == "script" and any(e.reasoning is not None or e.tool_calls for e in self.mode.script)):
            try:
                from dynamo_mono.parsers.formats import format_reasoning, format_tool_calls
            except ImportError as exc:
                raise ConfigError(f"--mocker-output={opts['mocker_output']} needs dynamo_mono.parsers.formats ({exc})") from None
        self.reasoning_parser = args.reasoning_parser
        self.tool_parser = args.tool_call_parser
        # Fail at startup, not per request, when the named parser format is unknown.
        try:
            if self.mode.kind == "reasoning":
                format_reasoning(self.mode.parser or self.reasoning_parser or "basic", "r", "c")
            elif self.mode.kind == "tool-calls":
                format_tool_calls(self.mode.parser or self.tool_parser or "hermes", [("f", {})])
        except (KeyError, ValueError, LookupError) as exc:
            raise ConfigError(f"--mocker-output={opts['mocker_output']}: unknown parser format ({exc})") from None
        vocab = args.vocab_size or getattr(self.tokenizer, "vocab_size", 0) or 32000
        specials = set(getattr(self.tokenizer, "special_ids", ()) or ()) | set(args.eos_token_ids or ())
        allowed = np.array(ordinary_token_ids(self.tokenizer, vocab, specials), dtype=np.int64)
        if len(allowed) == 0:
            raise ConfigError("mocker: the vocabulary has no ordinary (non-special) tokens to generate")
        self.allowed = allowed
        instances = parse_instances(opts["mocker_fault_instances"])
        fail_after = opts["mocker_fail_after"]
        if instances is not None and self.instance_id not in instances:
            fail_after = None
        self.faults = InstanceFaults(float(opts["mocker_crash_duration"]), fail_after)
        self.modalities, self.media_input = media_input(opts, self.tokenizer, self.kind)
        self.encoders: list[MediaEncoder | None] = [
            MediaEncoder(float(opts["mocker_encoder_ms_per_token"]),
                         EncoderCache(int(float(opts["multimodal_embedding_cache_capacity_gb"]) * 1024 ** 3)))
            if self.media_input else None
            for _ in range(self.dp_size)
        ]
        tiers = tier_config(opts)
        self.ranks: list[Scheduler] = [
            Scheduler(
                KvManager(self.num_blocks, self.block_size, enable_prefix_caching=self.prefix_caching, dp_rank=r,
                          tiers=tiers),
                max_num_seqs=opts["max_num_seqs"],
                max_num_batched_tokens=opts["max_num_batched_tokens"],
                enable_chunked_prefill=self.chunked,
                watermark=float(opts["watermark"]),
                encoder=self.encoders[r],
            )
            for r in range(self.dp_size)
        ]
        self.event_ids = [0] * self.dp_size
        self.sink: KvEventSink | None = None
        self.tasks: list[asyncio.Task | None] = [None] * self.dp_size
        self.requests: dict[str, list[Sequence]] = {}
        self._arrival = 0
        self._stopped = False
        self.disagg = DisaggAgent(opts) if opts["disaggregation_mode"] != "agg" else None
        self.lora_enabled = bool(opts["enable_lora"]) and self.kind == "chat"
        self.loras = LoraSlots(int(opts["max_loras"]), int(opts["max_lora_rank"]),
                               float(opts["lora_load_ms"]) / 1000.0 / self.speedup if self.speedup else 0.0)
        self.embedders: list[EmbedScheduler] = []
        if self.kind == "embedding":
            embedder = HashedEmbedder(opts["embedding_dim"])
            self.embedders = [
                EmbedScheduler(embedder, self.perf, speedup=self.speedup, max_num_seqs=opts["max_num_seqs"],
                               max_num_batched_tokens=opts["max_num_batched_tokens"], num_blocks=self.num_blocks,
                               block_size=self.block_size)
                for _ in range(self.dp_size)
            ]

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopped = False
        if self.disagg is not None:
            await self.disagg.start()
        if self.opts["startup_time"]:
            await asyncio.sleep(float(self.opts["startup_time"]))

    async def stop(self) -> None:
        self._stopped = True
        for rank, sched in enumerate(self.ranks):
            for seq in sched.drain():
                seq.fail("mocker: engine stopped")
                seq.wake()
            self._flush(rank)
        for emb in self.embedders:
            await emb.stop()
        tasks = [t for t in self.tasks if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        if self.disagg is not None:
            await self.disagg.stop()

    def model_card(self) -> ModelCard:
        embedding = self.kind == "embedding"
        return ModelCard(
            name=self.args.served_model_name,
            max_model_len=self.args.max_model_len,
            block_size=self.block_size,
            dp_size=self.dp_size,
            total_kv_blocks=self.num_blocks,
            max_num_seqs=self.opts["max_num_seqs"],
            max_num_batched_tokens=self.opts["max_num_batched_tokens"],
            reasoning_parser=self.reasoning_parser,
            tool_call_parser=self.tool_parser,
            eos_token_ids=list(self.args.eos_token_ids or []),
            supports_priority=True,
            priority_higher_is_urgent=False,
            supports_logprobs=True,
            kv_events=not embedding,  # embedding steps keep no KV after the request
            disaggregation_mode=self.opts["disaggregation_mode"],
            kv_endpoint=self.disagg.advertised_endpoint() if self.disagg is not None else None,
            kind=self.kind,
            modalities=list(self.modalities),
            media_input=dict(self.media_input),
            embedding_dim=self.opts["embedding_dim"] if embedding else None,
            matryoshka=embedding and bool(self.opts["embedding_matryoshka"]),
            supports_lora=self.lora_enabled,
            max_loras=int(self.opts["max_loras"]) if self.lora_enabled else 0,
            max_lora_rank=int(self.opts["max_lora_rank"]) if self.lora_enabled else 0,
        )

    # --- LoRA ------------------------------------------------------------------------------------------
    async def load_lora(self, adapter: LoraAdapter) -> None:
        """Register the adapter (its adapter_config.json is read, its rank checked); it takes a GPU slot when a
        request first uses it."""
        if not self.lora_enabled:
            raise EngineError("mocker: LoRA is off (--enable-lora false)", retryable=False)
        if self._stopped or self.faults.crashed():
            raise EngineError("mocker: instance is down")
        self.loras.register(adapter)

    async def unload_lora(self, name: str) -> None:
        self.loras.forget(name)

    def list_loras(self) -> list[str]:
        return list(self.loras.known)

    def healthy(self) -> bool:
        return not self._stopped and not self.faults.crashed()

    def recover(self) -> None:
        """Clear an injected crash or stall now."""
        self.faults.recover()

    # --- KV events / metrics -----------------------------------------------------------------------
    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        self.sink = sink

    def kv_snapshot(self) -> list[KvEventBatch]:
        now = time.time()
        return [KvEventBatch(self.instance_id, r, self.event_ids[r], s.kv.snapshot(), now)
                for r, s in enumerate(self.ranks)]

    def load_metrics(self) -> list[LoadMetrics]:
        if self.embedders:
            return [LoadMetrics(dp_rank=r, running=e.running, waiting=e.waiting, kv_total_blocks=self.num_blocks)
                    for r, e in enumerate(self.embedders)]
        out = []
        for r, s in enumerate(self.ranks):
            lm = LoadMetrics(dp_rank=r, running=len(s.running), waiting=len(s.waiting),
                             kv_active_blocks=s.kv.active_blocks, kv_total_blocks=s.kv.num_blocks,
                             prefix_hit_rate=s.prefix_hit_rate(), preemptions=s.preemptions,
                             kvbm=s.kv.tiers.stats.export() if s.kv.tiers is not None else None)
            enc = self.encoders[r]
            if enc is not None:
                lm.embedding_cache_hits, lm.embedding_cache_misses = enc.hits, enc.misses
                lm.embedding_cache_bytes = enc.cache.bytes
            if self.disagg is not None and r == 0:  # one agent per instance: its counts on rank 0
                lm.kv_transfer_bytes, lm.kv_transfer_failures = self.disagg.pulled_bytes, self.disagg.failed_pulls
            out.append(lm)
        return out

    def _flush(self, rank: int) -> None:
        events = self.ranks[rank].kv.take_events()
        if not events:
            return
        self.event_ids[rank] += 1
        sink = self.sink
        if sink is not None:
            try:
                sink(KvEventBatch(self.instance_id, rank, self.event_ids[rank], events, time.time()))
            except Exception:  # a broken consumer must not stop the engine
                log.exception("mocker: KV event sink failed")

    # --- requests ------------------------------------------------------------------------------------
    async def abort(self, request_id: str) -> None:
        for seq in list(self.requests.get(request_id, ())):
            if self.ranks[seq.dp_rank].remove(seq):
                seq.finish = "abort"
                seq.wake()

    def _crash(self) -> None:
        self.faults.crash()
        for emb in self.embedders:
            emb.fail_all("mocker: instance crashed")
        for rank, sched in enumerate(self.ranks):
            for seq in sched.drain():
                seq.fail("mocker: instance crashed")
                seq.wake()
            sched.kv.clear()
            self._flush(rank)

    def _pick_rank(self, request: EngineRequest) -> int:
        if request.dp_rank is not None:
            if not 0 <= request.dp_rank < self.dp_size:
                raise ValueError(f"dp_rank {request.dp_rank} out of range (data parallel size {self.dp_size})")
            return request.dp_rank
        if self.dp_size == 1:
            return 0
        return min(range(self.dp_size),
                   key=lambda r: (len(self.ranks[r].running) + len(self.ranks[r].waiting), self.ranks[r].kv.active_blocks))

    def _source(self, request: EngineRequest, seed: int, original: list[int]) -> TokenSource:
        mode = self.mode
        if mode.kind == "random":
            return TokenSource(self.allowed, seed, None, eos_length(seed))
        prompt_text = self.tokenizer.decode(original)
        text = build_text(mode, request, seed, prompt_text,
                          self.reasoning_parser or "basic", self.tool_parser or "hermes")
        ids = list(self.tokenizer.encode(text))
        return TokenSource(self.allowed, seed, ids, len(ids))

    def _reject(self, request: EngineRequest) -> str | None:
        n = len(request.token_ids)
        if n == 0:
            return "mocker: empty prompt"
        for item in request.media:
            if item.kind not in self.media_input:
                return f"mocker: this model does not take {item.kind} input"
            if item.start < 0 or item.start + item.length > n:
                return f"mocker: a {item.kind} item's placeholder range is outside the prompt"
        if self.args.max_model_len and n >= self.args.max_model_len + 1:
            return f"mocker: prompt of {n} tokens exceeds max model len {self.args.max_model_len}"
        if (n + self.block_size) // self.block_size > self.num_blocks:
            return f"mocker: prompt of {n} tokens needs more than {self.num_blocks} KV blocks of {self.block_size}"
        if not self.chunked and n > self.opts["max_num_batched_tokens"]:
            return (f"mocker: prompt of {n} tokens exceeds max_num_batched_tokens="
                    f"{self.opts['max_num_batched_tokens']} with chunked prefill off")
        return None

    async def embed(self, request: EmbeddingRequest) -> EmbeddingOutput:
        """Embed a batch of inputs: queued with other requests' inputs and run in timed engine steps."""
        if self.kind != "embedding":
            raise EngineError("mocker: this instance serves a chat model, not embeddings", retryable=False)
        if self._stopped or self.faults.crashed():
            raise EngineError("mocker: instance is down")
        problem = self._reject_embedding(request)
        if problem is None:
            try:
                rank = self._pick_embed_rank(request)
            except ValueError as exc:
                problem = f"mocker: {exc}"
        if problem is not None:  # the request itself: no other instance would do better
            raise EngineError(problem, retryable=False)
        vectors = await self.embedders[rank].submit(request.token_ids, request.dimensions)
        return EmbeddingOutput(vectors, sum(map(len, request.token_ids)))

    def _reject_embedding(self, request: EmbeddingRequest) -> str | None:
        if not request.token_ids:
            return "mocker: no inputs"
        dim, dims = self.opts["embedding_dim"], request.dimensions
        if dims is not None:
            if not self.opts["embedding_matryoshka"]:
                return "mocker: this model does not support `dimensions` (--embedding-matryoshka is off)"
            if not 1 <= dims <= dim:
                return f"mocker: dimensions={dims} must be between 1 and the model's {dim}"
        limit = self.args.max_model_len
        for i, ids in enumerate(request.token_ids):
            n = len(ids)
            if n == 0:
                return f"mocker: input {i} is empty"
            if limit and n > limit:
                return f"mocker: input {i} has {n} tokens, more than max model len {limit}"
            if -(-n // self.block_size) > self.num_blocks:
                return f"mocker: input {i} of {n} tokens needs more than {self.num_blocks} KV blocks of {self.block_size}"
        return None

    def _pick_embed_rank(self, request: EmbeddingRequest) -> int:
        if request.dp_rank is not None:
            if not 0 <= request.dp_rank < self.dp_size:
                raise ValueError(f"dp_rank {request.dp_rank} out of range (data parallel size {self.dp_size})")
            return request.dp_rank
        return min(range(self.dp_size), key=lambda r: self.embedders[r].running + self.embedders[r].waiting)

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream outputs: at most one EngineOutput per engine step, tokens batched."""
        if request.lora_name is None:
            return self._generate(request)
        return self._generate_lora(request, request.lora_name)

    async def _generate_lora(self, request: EngineRequest, lora: str) -> AsyncIterator[EngineOutput]:
        """An adapter's request holds a GPU slot from before it is scheduled until it ends: a miss waits for a free
        slot and pays the swap time, so placement shows in TTFT."""
        if not self.lora_enabled:
            raise EngineError("mocker: LoRA is off (--enable-lora false)", retryable=False)
        await self.loras.acquire(lora)
        try:
            async with contextlib.aclosing(self._generate(request)) as gen:
                async for out in gen:
                    yield out
        finally:
            self.loras.release(lora)

    async def _generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self.kind != "chat":
            raise EngineError("mocker: this instance serves an embedding model; it does not generate",
                              retryable=False)
        faults = parse_annotations(request.annotations) if request.annotations else None
        if faults is not None:
            if faults.recover:
                self.faults.recover()
            if faults.crash:
                self._crash()
                yield EngineOutput(finish_reason="error", error="mocker: instance crashed (injected)",
                                   prompt_tokens=len(request.token_ids), cached_tokens=0)
                return
            if faults.stall_s:
                self.faults.stall(faults.stall_s)
        if self._stopped or self.faults.crashed():
            yield EngineOutput(finish_reason="error", error="mocker: instance is down",
                               prompt_tokens=len(request.token_ids), cached_tokens=0)
            return
        problem = self._reject(request)
        rank = 0
        if problem is None:
            try:
                rank = self._pick_rank(request)
            except ValueError as exc:
                problem = f"mocker: {exc}"
        if problem is not None:  # the request itself: no other instance would do better
            raise EngineError(problem, retryable=False)

        k = max(0, min(request.resumed_output_tokens, len(request.token_ids) - 1))
        original = request.token_ids[:-k] if k else request.token_ids
        seed = request_seed(request, original)
        transfer = request.kv_transfer
        if transfer is not None and self.disagg is not None and self.prefix_caching:
            await self._pull_kv(rank, transfer, original, request.media)
        fail_after = faults.fail_after if faults is not None and faults.fail_after is not None else self.faults.fail_after
        self._arrival += 1
        seq = Sequence(
            request, self._source(request, seed, original),
            block_size=self.block_size, prefix_caching=self.prefix_caching, arrival=self._arrival,
            migrated=k, eos_ids=self.args.eos_token_ids, fail_after=fail_after,
            slow_prefill=faults.slow_prefill if faults is not None else 1.0, dp_rank=rank,
        )
        if self.args.max_model_len:
            seq.max_tokens = min(seq.max_tokens, max(0, self.args.max_model_len - seq.prompt_len))
        if seq.max_tokens <= 0 and seq.finish is None:
            seq.finish = "length"
        if seq.finish is not None:
            seq.status = FINISHED
        else:
            self.ranks[rank].add(seq)
            self.requests.setdefault(seq.rid, []).append(seq)
            if self.tasks[rank] is None:
                self.tasks[rank] = asyncio.get_running_loop().create_task(self._run(rank))
        seed_lp = seed
        try:
            loop = asyncio.get_running_loop()
            while True:
                if not seq.pending and seq.finish is None:
                    fut = loop.create_future()
                    seq.waiter = fut
                    await fut
                    continue
                toks = seq.pending
                if toks:
                    seq.pending = []
                out = EngineOutput(token_ids=toks)
                if toks and seq.logprobs is not None:
                    out.logprobs = self._logprobs(toks, seq.pending_pos, seed_lp, seq.logprobs)
                seq.pending_pos += len(toks)
                if not seq.first_sent:
                    seq.first_sent = True
                    out.prompt_tokens = seq.prompt_len
                    out.cached_tokens = seq.cached_tokens or 0
                fin = seq.finish
                if fin is None:
                    yield out
                    continue
                if fin == "error":
                    if toks:
                        yield out
                        out = EngineOutput()
                    out.finish_reason = "error"
                    out.error = seq.error
                else:
                    out.finish_reason = fin
                    out.stop_token_id = seq.stop_token_id
                    key = request.kv_export_key
                    if key is not None and self.disagg is not None and self.disagg.mode == "prefill":
                        self.disagg.publish(key, self.ranks[rank].kv, seq.hashes[:seq.prompt_len // self.block_size])
                yield out
                return
        finally:
            if seq.status != FINISHED:
                self.ranks[rank].remove(seq)
            lst = self.requests.get(seq.rid)
            if lst is not None:
                try:
                    lst.remove(seq)
                except ValueError:
                    pass
                if not lst:
                    del self.requests[seq.rid]

    async def _pull_kv(self, rank: int, transfer: KvTransferParams, prompt: list[int],
                       media: list[MediaItem]) -> None:
        """Decode side of disaggregation: pull the prompt's blocks and enter them into the prefix cache."""
        n = min(transfer.num_blocks, len(prompt) // self.block_size)
        spans = [MediaSpan(m.content_hash, m.start, m.length) for m in media]
        hashes = block_hashes(prompt[:n * self.block_size], self.block_size, media=spans)
        if await self.disagg.pull(transfer, hashes):
            kv = self.ranks[rank].kv
            import_blocks(kv, hashes, prompt[:n * self.block_size], block_media(n, self.block_size, spans))
            self._flush(rank)

    def _logprobs(self, toks: list[int], pos0: int, seed: int, n_top: int) -> list[TokenLogprob]:
        allowed = self.allowed
        out = []
        for j, t in enumerate(toks):
            lp, top = logprobs_for(t, pos0 + j, seed, n_top, allowed)
            out.append(TokenLogprob(t, lp, top))
        return out

    # --- the step loop ---------------------------------------------------------------------------------
    async def _run(self, rank: int) -> None:
        sched = self.ranks[rank]
        perf = self.perf
        faults = self.faults
        deadline = time.perf_counter()
        try:
            while sched.has_work():
                if faults.stall_until:
                    rem = faults.stall_remaining()
                    if rem > 0:
                        await asyncio.sleep(rem)
                        deadline = time.perf_counter()
                        continue
                    faults.stall_until = 0.0
                plan, failed = sched.schedule()
                for seq in failed:
                    seq.wake()
                if not plan.seqs:
                    self._flush(rank)
                    await asyncio.sleep(0.001)
                    continue
                speed = self.speedup
                if speed > 0:
                    # Sleep to an absolute deadline so Python overhead does not stretch simulated time. Timers
                    # fire late by up to a millisecond (uvloop's resolution): being late by less than
                    # _CATCH_UP_S is paid back by the next steps' shorter sleeps; a longer stall is not.
                    now = time.perf_counter()
                    if deadline < now - _CATCH_UP_S:
                        deadline = now
                    step_ms = self._step_ms(perf, sched, plan)
                    deadline += step_ms / 1000.0 / speed
                    await asyncio.sleep(max(0.0, deadline - now))
                else:
                    if sched.kv.tiers is not None:
                        self._step_ms(perf, sched, plan)
                    await asyncio.sleep(0)
                self._complete(rank, sched, plan)
        finally:
            self.tasks[rank] = None

    @staticmethod
    def _step_ms(perf: PerfModel, sched: Scheduler, plan: StepPlan) -> float:
        """Simulated time of one step; it also drives the offload tiers' transfers."""
        ms = perf.step_ms(plan.prefill, plan.decode_seqs, plan.decode_kv_tokens) + plan.encoder_ms + plan.onboard_ms
        if sched.kv.tiers is not None:
            sched.kv.tiers.tick(ms)
        return ms

    def _complete(self, rank: int, sched: Scheduler, plan: StepPlan) -> None:
        sched.complete(plan)
        if sched.kv.events:
            self._flush(rank)


def create_engine(args: EngineArgs) -> MockerEngine:
    """Engine factory registered as "mocker"."""
    return MockerEngine(args)
