"""Continuous-batching scheduler of one dp rank, modelled on vLLM v1's scheduler.

Each step: running sequences first (in urgency order: priority, then arrival), each gets its
remaining prefill (chunked to the token budget) or one decode token; a sequence that needs a block
when none is free preempts the least urgent running sequence (highest priority value, latest
arrival), whose blocks are freed and which is recomputed later. If nothing was preempted, waiting
sequences are admitted in urgency order while the budget, max_num_seqs and the free-block
watermark allow; prefix-cache hits (whole blocks) skip their compute.
"""

from __future__ import annotations

import heapq
from bisect import insort
from dataclasses import dataclass, field

from mocker.encoder import MediaEncoder
from mocker.kv_manager import KvManager
from mocker.sequence import FINISHED, RUNNING, WAITING, Sequence


def _urgency(seq: Sequence) -> tuple[int, int]:
    return (seq.priority, seq.arrival)


@dataclass(slots=True)
class StepPlan:
    """What one step computes: the sequences, their token counts and the perf-model inputs."""

    seqs: list[Sequence] = field(default_factory=list)
    nums: list[int] = field(default_factory=list)
    prefill: list[tuple[int, int, float]] = field(default_factory=list)  # (new tokens, context, slowdown)
    decode_seqs: int = 0
    decode_kv_tokens: int = 0
    encoder_ms: float = 0.0  # media encoder work of this step's prefill chunks
    onboard_ms: float = 0.0  # copying prefix blocks back from the host / disk offload tiers


class Scheduler:
    """Waiting heap + running list over one KvManager; schedule() then complete() once per step."""

    def __init__(self, kv: KvManager, *, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
                 enable_chunked_prefill: bool = True, watermark: float = 0.01,
                 encoder: MediaEncoder | None = None) -> None:
        self.kv = kv
        self.encoder = encoder
        self.block_size = kv.block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.chunked = enable_chunked_prefill
        self.watermark_blocks = int(watermark * kv.num_blocks)
        self.waiting: list[tuple[int, int, Sequence]] = []  # heap by (priority, arrival)
        self.running: list[Sequence] = []  # sorted by (priority, arrival)
        self.preemptions = 0
        self.steps = 0  # schedule() calls that produced work
        self.seq_steps = 0  # sum over steps of sequences scheduled (simulation-cost denominator)
        self.hit_tokens = 0
        self.queried_tokens = 0

    # --- membership ----------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def add(self, seq: Sequence) -> None:
        seq.status = WAITING
        heapq.heappush(self.waiting, (seq.priority, seq.arrival, seq))

    def remove(self, seq: Sequence) -> bool:
        """Take a sequence out (abort / failure) and free its blocks at once; False if not present."""
        if seq.status == RUNNING:
            self.running.remove(seq)
        elif seq.status == WAITING:
            for i, item in enumerate(self.waiting):
                if item[2] is seq:
                    self.waiting.pop(i)
                    heapq.heapify(self.waiting)
                    break
            else:
                return False
        else:
            return False
        seq.status = FINISHED
        self.kv.free_blocks(seq.blocks)
        return True

    def drain(self) -> list[Sequence]:
        """Remove every sequence (instance crash); returns them."""
        seqs = self.running + [item[2] for item in self.waiting]
        for seq in seqs:
            seq.status = FINISHED
            self.kv.free_blocks(seq.blocks)
        self.running = []
        self.waiting = []
        return seqs

    def _preempt(self, seq: Sequence) -> None:
        self.kv.free_blocks(seq.blocks)
        seq.num_computed = 0
        seq.num_cached_blocks = 0
        seq.encoded.clear()  # recomputed from scratch: its media are encoded again (unless cached)
        self.preemptions += 1
        self.add(seq)

    # --- one step ----------------------------------------------------------------------------------
    def schedule(self) -> tuple[StepPlan, list[Sequence]]:
        """Pick this step's work and allocate its blocks. Returns the plan and sequences failed for lack of KV."""
        plan = StepPlan()
        seqs, nums = plan.seqs, plan.nums
        failed: list[Sequence] = []
        budget = self.max_num_batched_tokens
        bs = self.block_size
        kv = self.kv
        running = self.running
        preempted = False
        decode_seqs = 0
        decode_kv = 0
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            computed = seq.num_computed
            n = len(seq.tokens) - computed
            if n > budget:
                n = budget
            need = (computed + n + bs - 1) // bs - len(seq.blocks)
            if need > 0 and not kv.allocate(seq.blocks, need):
                victim = None
                while victim is not seq:
                    victim = running.pop()
                    preempted = True
                    if victim is seq and not running:
                        # Alone and still out of blocks: this sequence can never fit the pool.
                        victim.status = FINISHED
                        kv.free_blocks(victim.blocks)
                        victim.fail(f"mocker: sequence of {len(victim.tokens)} tokens does not fit "
                                    f"{kv.num_blocks} KV blocks of {bs}")
                        failed.append(victim)
                        break
                    self._preempt(victim)
                    if victim is not seq and kv.allocate(seq.blocks, need):
                        break
                if victim is seq:
                    break
            seqs.append(seq)
            nums.append(n)
            budget -= n
            if n == 1 and computed >= seq.prompt_len:
                decode_seqs += 1
                decode_kv += computed + 1
            else:
                plan.prefill.append((n, computed, seq.slow_prefill))
                if self.encoder is not None and seq.request.media:
                    plan.encoder_ms += self.encoder.charge(seq, computed, computed + n)
            i += 1
        if not preempted:
            self._admit(plan, budget, failed)
        plan.decode_seqs = decode_seqs
        plan.decode_kv_tokens = decode_kv
        if seqs:
            self.steps += 1
            self.seq_steps += len(seqs)
        return plan, failed

    def _admit(self, plan: StepPlan, budget: int, failed: list[Sequence]) -> None:
        kv = self.kv
        bs = self.block_size
        waiting = self.waiting
        running = self.running
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            seq = waiting[0][2]
            ntok = len(seq.tokens)
            hits: list[int] = []
            if kv.enable_prefix_caching:
                seq.ensure_hashes(ntok // bs, bs)
                # At least one token is always computed, so a full hit leaves the last block to recompute.
                hits = kv.match_prefix(seq.hashes, (ntok - 1) // bs)
            onboard: list[str] = []
            tiers = kv.tiers
            if tiers is not None:
                # Past the GPU prefix, consecutive blocks still held on host or disk are copied back, not recomputed.
                onboard = tiers.match(seq.hashes, len(hits), (ntok - 1) // bs)
            computed = (len(hits) + len(onboard)) * bs
            n = ntok - computed
            if n > budget:
                if not self.chunked:
                    if n > self.max_num_batched_tokens:
                        heapq.heappop(waiting)
                        seq.status = FINISHED
                        seq.fail(f"mocker: {n} tokens to prefill exceed max_num_batched_tokens="
                                 f"{self.max_num_batched_tokens} with chunked prefill off")
                        failed.append(seq)
                        continue
                    break
                n = budget
            need = (computed + n + bs - 1) // bs - len(hits)
            free_after = kv.num_free - kv.evictable(hits) - need
            if free_after < 0 or (free_after < self.watermark_blocks and running):
                break
            if not kv.allocate(seq.blocks, need, hits):
                break
            heapq.heappop(waiting)
            seq.num_computed = computed
            seq.num_cached_blocks = len(hits)
            if tiers is not None:
                start = len(hits)
                queried = (ntok - 1) // bs - start
                if queried > 0:
                    plan.onboard_ms += tiers.onboard(seq.hashes, start, onboard, queried)
                if onboard:
                    end = start + len(onboard)
                    kv.commit(seq.blocks, seq.hashes, seq.tokens, start, end, seq.media, seq.request.lora_name)
                    seq.num_cached_blocks = end
            if seq.cached_tokens is None:
                seq.cached_tokens = computed
                self.hit_tokens += computed
                self.queried_tokens += ntok
            seq.status = RUNNING
            insort(running, seq, key=_urgency)
            plan.seqs.append(seq)
            plan.nums.append(n)
            plan.prefill.append((n, computed, seq.slow_prefill))
            if self.encoder is not None and seq.request.media:
                plan.encoder_ms += self.encoder.charge(seq, computed, computed + n)
            budget -= n

    def complete(self, plan: StepPlan) -> int:
        """Account the computed tokens, generate one token per sequence that finished its prompt or decode
        step, and wake the consumers of sequences with new tokens or a finish. Returns how many were woken."""
        kv = self.kv
        bs = self.block_size
        caching = kv.enable_prefix_caching
        finished: list[Sequence] = []
        woken = 0
        for seq, n in zip(plan.seqs, plan.nums):
            if seq.status != RUNNING:
                continue  # aborted or failed while the step was in flight
            c = seq.num_computed = seq.num_computed + n
            if caching and c >= (seq.num_cached_blocks + 1) * bs:
                full = c // bs
                kv.commit(seq.blocks, seq.ensure_hashes(full, bs), seq.tokens, seq.num_cached_blocks, full,
                          seq.media, seq.request.lora_name)
                seq.num_cached_blocks = full
            if c < len(seq.tokens):
                continue  # a prefill chunk that did not reach the end of the prompt
            if seq.advance():
                finished.append(seq)
            w = seq.waiter
            if w is not None:
                seq.waiter = None
                if not w.done():
                    w.set_result(None)
            woken += 1
        if finished:
            running = self.running
            for seq in finished:
                running.remove(seq)
                seq.status = FINISHED
                kv.free_blocks(seq.blocks)
        return woken

    # --- metrics -------------------------------------------------------------------------------------
    def prefix_hit_rate(self) -> float:
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0
