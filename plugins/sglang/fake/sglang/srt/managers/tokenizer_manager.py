"""FAKE sglang.srt.managers.tokenizer_manager (0.5.23): TokenizerManager over dynamo-mono's mocker.

The real one tokenizes (or not: skip_tokenizer_init), sends requests to the scheduler processes and turns their
BatchTokenIDOutput into stream chunks. Here the "scheduler" is the mocker's MockerEngine (one Scheduler + KvManager
per dp rank, PerfModel step times), its KV events re-published on SGLang's wire by one ZmqEventPublisher per rank.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, List, Optional

from sglang.srt.disaggregation.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KVEventBatch,
    KVEventsConfig,
    ZmqEventPublisher,
)
from sglang.srt.managers.load_snapshot import LoadSnapshot
from sglang.srt.sampling.sampling_params import normalize
from sglang.srt.server_args import ServerArgs

_FAKE_DEFAULT_TOTAL_TOKENS = 1 << 16  # the real engine sizes the pool from GPU memory


def _model_config(model_path: str) -> dict[str, Any]:
    """config.json (+ generation_config.json eos ids) of a local model directory, as SGLang's ModelConfig reads it."""
    cfg: dict[str, Any] = {}
    p = Path(model_path)
    if (p / "config.json").exists():
        cfg = json.loads((p / "config.json").read_text())
    eos: set[int] = set()
    for src in (cfg, json.loads((p / "generation_config.json").read_text())
                if (p / "generation_config.json").exists() else {}):
        e = src.get("eos_token_id")
        eos |= set(e) if isinstance(e, list) else ({e} if isinstance(e, int) else set())
    cfg["_eos"] = sorted(eos)
    return cfg


def _sglang_hash(parent: Optional[int], tokens: list[int]) -> int:
    """A page hash in SGLang's style (SHA-256 chained over the parent and the page's tokens, signed 64 bits):
    deliberately not dynamo-mono's block hash, as the real engine's is not."""
    h = hashlib.sha256((parent or 0).to_bytes(8, "big", signed=True))
    h.update(b"".join(t.to_bytes(4, "little") for t in tokens))
    return int.from_bytes(h.digest()[:8], "big", signed=True)


class TokenizerManager:
    """The fake's request front: generate_request-equivalent streams, abort_request, get_loads, context_len."""

    __slots__ = ("server_args", "context_len", "model_path", "served_model_name", "_mocker", "_publishers",
                 "_hash_maps", "_eos", "_page", "_total_tokens", "_states", "_fault", "_loop_tasks")

    def __init__(self, server_args: ServerArgs) -> None:
        from dynamo_mono.api import EngineArgs
        from mocker.engine import MockerEngine

        cfg = _model_config(server_args.model_path)
        self.server_args = server_args
        self.model_path = server_args.model_path
        self.served_model_name = server_args.served_model_name or server_args.model_path
        self.context_len = int(server_args.context_length or cfg.get("max_position_embeddings") or 8192)
        self._eos = list(cfg["_eos"])
        self._page = int(server_args.page_size or 1)
        self._total_tokens = int(server_args.max_total_tokens or _FAKE_DEFAULT_TOTAL_TOKENS)
        chunk = server_args.chunked_prefill_size
        opts: dict[str, Any] = {
            "block_size": self._page, "num_gpu_blocks_override": self._total_tokens // self._page,
            "data_parallel_size": server_args.dp_size, "enable_prefix_caching": not server_args.disable_radix_cache,
            "speedup_ratio": float(os.environ.get("SGLANG_FAKE_SPEEDUP", "1")),
            "enable_chunked_prefill": chunk != -1,
        }
        if server_args.max_running_requests:
            opts["max_num_seqs"] = server_args.max_running_requests
        if chunk and chunk > 0:
            opts["max_num_batched_tokens"] = chunk
        vocab = int(cfg.get("vocab_size") or 32000)
        self._mocker = MockerEngine(EngineArgs(
            model_path=server_args.model_path, served_model_name=self.served_model_name, instance_id=0,
            max_model_len=self.context_len, eos_token_ids=self._eos, vocab_size=vocab, options=opts))
        self._publishers: list[ZmqEventPublisher] = []
        self._hash_maps: list[dict[int, int]] = [{} for _ in range(server_args.dp_size)]
        if server_args.kv_events_config:
            kc = KVEventsConfig.from_cli(server_args.kv_events_config)
            if kc.publisher == "zmq":
                self._publishers = [ZmqEventPublisher(r, kc.endpoint, topic=kc.topic, bind=kc.bind, hwm=kc.hwm)
                                    for r in range(server_args.dp_size)]
                self._mocker.set_kv_event_sink(self._publish)
        fault = os.environ.get("SGLANG_FAKE_FAULT_PROMPT")
        self._fault = [int(x) for x in fault.split(",")] if fault else None
        self._states: dict[str, asyncio.Task | None] = {}
        self._loop_tasks: set[asyncio.Task] = set()

    # --- KV events: the mocker's cache events on SGLang's wire -----------------------------------------
    def _publish(self, batch: Any) -> None:
        from dynamo_mono.api import AllBlocksCleared as OurCleared, BlockRemoved as OurRemoved

        hmap = self._hash_maps[batch.dp_rank]
        events: list[Any] = []
        for ev in batch.events:
            if isinstance(ev, OurCleared):
                hmap.clear()
                events.append(AllBlocksCleared())
            elif getattr(ev, "tier", "gpu") != "gpu":
                continue  # the fake models no HiCache tiers
            elif isinstance(ev, OurRemoved):
                gone = [hmap.pop(h) for h in ev.block_hashes if h in hmap]
                if gone:
                    events.append(BlockRemoved(block_hashes=gone))
            else:  # BlockStored: one page each, as SGLang's radix cache records them
                parent = hmap.get(ev.parent_block_hash) if ev.parent_block_hash is not None else None
                bs = ev.block_size
                for i, h in enumerate(ev.block_hashes):
                    toks = list(ev.token_ids[i * bs:(i + 1) * bs])
                    theirs = _sglang_hash(parent, toks)
                    hmap[h] = theirs
                    events.append(BlockStored(block_hashes=[theirs], parent_block_hash=parent, token_ids=toks,
                                              block_size=bs, lora_id=None))
                    parent = theirs
        if events:
            self._publishers[batch.dp_rank].publish(KVEventBatch(ts=time.time(), events=events))

    # --- requests ------------------------------------------------------------------------------------------
    def generate_stream(self, *, input_ids: List[int], sampling_params: dict, rid: str, routed_dp_rank: Optional[int],
                        priority: Optional[int], return_logprob: bool, top_logprobs_num: int) -> AsyncIterator[dict]:
        """The incremental (skip_tokenizer_init) stream of one request. As generate_request is an async generator,
        its validation errors (ValueError / TypeError) surface on the first iteration, not at the call."""
        return self._stream(lambda: self._build(input_ids, sampling_params, rid, routed_dp_rank, priority,
                                                return_logprob, top_logprobs_num), return_logprob, top_logprobs_num)

    def _build(self, input_ids: List[int], sampling_params: dict, rid: str, routed_dp_rank: Optional[int],
               priority: Optional[int], return_logprob: bool, top_logprobs_num: int) -> Any:
        from dynamo_mono.api import EngineRequest, SamplingParams, StopConditions

        sp = normalize(sampling_params)
        if sp["n"] != 1:
            raise NotImplementedError("fake sglang: n > 1 in one request is not modelled")
        for key in ("stop", "stop_regex", "json_schema", "regex", "ebnf", "structural_tag", "logit_bias",
                    "custom_params", "beam_width", "watermark"):
            if sp[key] is not None:
                raise NotImplementedError(f"fake sglang: sampling_params[{key!r}] is not modelled")
        if not input_ids:
            raise ValueError("input_ids is empty")
        if len(input_ids) >= self.context_len:
            raise ValueError(f"The input ({len(input_ids)} tokens) is longer than the model's context length "
                             f"({self.context_len} tokens).")
        ignore = bool(sp["ignore_eos"])
        prio = 0
        sa = self.server_args
        if priority is not None and sa.enable_priority_scheduling:
            prio = priority if sa.schedule_low_priority_values_first else -priority  # mocker: lower = first
        annotations = ["mocker.fail_after=1"] if self._fault and input_ids[:len(self._fault)] == self._fault else []
        top_k = sp["top_k"]
        req = EngineRequest(
            request_id=rid, token_ids=list(input_ids),
            sampling=SamplingParams(temperature=sp["temperature"], top_p=sp["top_p"],
                                    top_k=None if top_k >= (1 << 30) else top_k, seed=sp["sampling_seed"],
                                    logprobs=top_logprobs_num if return_logprob else None),
            stop=StopConditions(max_tokens=sp["max_new_tokens"], min_tokens=sp["min_new_tokens"],
                                stop_token_ids=[] if ignore else sorted(sp["stop_token_ids"] or ()),
                                eos_token_ids=[] if ignore else self._eos, ignore_eos=ignore),
            priority=prio, dp_rank=routed_dp_rank, annotations=annotations)
        self._states[rid] = None
        return req

    async def _stream(self, build: Any, return_logprob: bool, top_n: int) -> AsyncIterator[dict]:
        req = build()
        rid = req.request_id
        completion = 0
        cached = 0
        try:
            async for out in self._mocker.generate(req):
                toks = list(out.token_ids)
                if out.stop_token_id is not None:
                    toks.append(out.stop_token_id)  # SGLang keeps the matched stop token in output_ids
                completion += len(toks)
                if out.cached_tokens is not None:
                    cached = out.cached_tokens
                meta: dict[str, Any] = {"id": rid, "finish_reason": self._finish(out, completion),
                                        "prompt_tokens": len(req.token_ids), "weight_version": "default",
                                        "completion_tokens": completion, "cached_tokens": cached}
                if return_logprob:
                    lps = list(out.logprobs or ())
                    if out.stop_token_id is not None:
                        lps.append(None)
                    meta["output_token_logprobs"] = [(lp.logprob, lp.token_id, None) if lp else (0.0, t, None)
                                                     for lp, t in zip(lps, toks)]
                    if top_n > 0:
                        meta["output_top_logprobs"] = [[(v, t, None) for t, v in lp.top] if lp else None
                                                       for lp in lps]
                yield {"output_ids": toks, "meta_info": meta}
                if out.finish_reason is not None:
                    return
        finally:
            self._states.pop(rid, None)

    @staticmethod
    def _finish(out: Any, completion: int) -> Optional[dict]:
        fr = out.finish_reason
        if fr is None:
            return None
        if fr == "stop":
            return {"type": "stop", "matched": out.stop_token_id}
        if fr == "length":
            return {"type": "length", "length": completion}
        if fr == "abort":
            return {"type": "abort", "message": "Abort in waiting queue", "status_code": None, "err_type": None}
        return {"type": "abort", "message": out.error or "scheduler error", "status_code": 500, "err_type": None}

    def abort_request(self, rid: str = "", abort_all: bool = False) -> None:
        """Fire-and-forget, as the real one (it sends AbortReq to the scheduler); unknown rids are ignored."""
        if not abort_all and not rid:
            return
        rids = list(self._states) if abort_all else ([rid] if rid in self._states else [])
        loop = asyncio.get_running_loop()
        for r in rids:
            t = loop.create_task(self._mocker.abort(r))
            self._loop_tasks.add(t)
            t.add_done_callback(self._loop_tasks.discard)

    async def get_loads(self, include: Optional[List[str]] = None, dp_rank: Optional[int] = None) -> List[LoadSnapshot]:
        page = self._page
        out = []
        for lm in self._mocker.load_metrics():
            if dp_rank is not None and lm.dp_rank != dp_rank:
                continue
            used = lm.kv_active_blocks * page
            out.append(LoadSnapshot(
                timestamp=time.time(), dp_rank=lm.dp_rank, num_running_reqs=lm.running, num_waiting_reqs=lm.waiting,
                num_used_tokens=used, num_total_tokens=used, num_active_tokens=used,
                max_total_num_tokens=lm.kv_total_blocks * page,
                max_running_requests=self.server_args.max_running_requests or 0,
                token_usage=used / max(1, lm.kv_total_blocks * page), cache_hit_rate=lm.prefix_hit_rate))
        return out

    def shutdown(self) -> None:
        for p in self._publishers:
            p.shutdown()
