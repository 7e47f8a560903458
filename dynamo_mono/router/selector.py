"""KV-aware instance choice: cost = prefill work weighted against decode load, in units of KV blocks.

    cost(i) = overlap_weight * (queue(i) + prompt_tokens - overlap_blocks(i) * block_size) / block_size
              + active_decode_blocks(i) + (prompt_blocks - overlap_blocks(i))
    queue(i) = active_prefill_tokens(i) - min(inflight_blocks(i) * block_size, active_prefill_tokens(i))

The prefill term is what the request would wait for on instance i: the queue ahead of it plus its
own prompt minus the cached prefix. inflight_blocks(i) are the prompt blocks that requests already
routed to i are still computing (matched beyond the KV-event index): they are part of i's queue, but
this request would wait for them anywhere, computing them itself elsewhere, so they are not queue
*added* by going to i. Without that discount a request arriving while its group's prefix is being
prefilled saw the prefix once as overlap and once as queue, and left the group. The decode term is
what i would hold once the request runs: what it holds now plus the request's blocks that are not
already there (as Dynamo counts potential decode blocks). Both are in blocks, so the weight is
unit-free, and a cached block is credited overlap_weight + 1.
With temperature 0 the cheapest instance wins (ties: the longest overlap, then at random); otherwise
an instance is sampled with probability ~ exp(-(cost - min_cost) / (max_cost - min_cost) / temperature), i.e.
costs are normalised to [0, 1] first, so the temperature means the same at any load level.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

from dynamo_mono.engine import InstanceKey
from dynamo_mono.router.load import InstanceLoad


class KvSelector:
    """Chooses among candidate instances by cost (see module docstring)."""

    def __init__(self, block_size: int, overlap_weight: float = 1.0, temperature: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.block_size = block_size
        self.overlap_weight = overlap_weight
        self.temperature = temperature
        self.rng = rng or random.Random()

    def costs(self, candidates: Sequence[InstanceKey], loads: Sequence[InstanceLoad],
              overlaps: dict[InstanceKey, int], num_tokens: int,
              pos: dict[InstanceKey, int] | None = None,
              inflight: dict[InstanceKey, int] | None = None) -> list[float]:
        """Cost of each candidate, in blocks; loads[i] is candidates[i]'s load, pos maps key -> index,
        inflight maps key -> prompt blocks still being computed there for other requests."""
        bs = self.block_size
        w = self.overlap_weight / bs
        c0 = w * num_tokens
        costs = [w * ld.prefill_tokens + ld.decode_blocks + c0 for ld in loads]
        if overlaps:
            if pos is None:
                pos = {k: i for i, k in enumerate(candidates)}
            cap = num_tokens // bs  # a cached prefix never saves more than the prompt
            credit = w * bs + 1.0  # less to prefill, and fewer new blocks to hold
            for key, blocks in overlaps.items():
                i = pos.get(key)
                if i is not None:
                    costs[i] -= credit * (blocks if blocks < cap else cap)
        if inflight:
            if pos is None:
                pos = {k: i for i, k in enumerate(candidates)}
            for key, blocks in inflight.items():
                i = pos.get(key)
                if i is not None:
                    queued = loads[i].prefill_tokens
                    costs[i] -= w * min(blocks * bs, queued)
        return costs

    def pick(self, candidates: Sequence[InstanceKey], loads: Sequence[InstanceLoad],
             overlaps: dict[InstanceKey, int], num_tokens: int,
             pos: dict[InstanceKey, int] | None = None,
             inflight: dict[InstanceKey, int] | None = None) -> InstanceKey:
        """The chosen candidate (candidates must be non-empty)."""
        if len(candidates) == 1:
            return candidates[0]
        costs = self.costs(candidates, loads, overlaps, num_tokens, pos, inflight)
        lo = min(costs)
        if self.temperature <= 0.0:
            if costs.count(lo) == 1:
                return candidates[costs.index(lo)]
            tied = [k for k, c in zip(candidates, costs) if c == lo]
            if overlaps:  # keep a prefix where it already is: the longest overlap among the tied wins
                best = max(overlaps.get(k, 0) for k in tied)
                tied = [k for k in tied if overlaps.get(k, 0) == best]
            return tied[0] if len(tied) == 1 else self.rng.choice(tied)
        span = max(costs) - lo
        if span <= 0.0:
            return self.rng.choice(candidates)
        scale = 1.0 / (span * self.temperature)
        weights = [math.exp((lo - c) * scale) for c in costs]
        r = self.rng.random() * sum(weights)
        for key, wt in zip(candidates, weights):
            r -= wt
            if r < 0.0:
                return key
        return candidates[-1]
