"""Active load per engine instance: in-flight prefill tokens, active KV (decode) blocks and requests.

Accounting per request, from dispatch to finish:
- prefill tokens = prompt tokens not served from cache (num_tokens - overlap_blocks * block_size);
  they count until the first token arrives (prefill done).
- decode blocks = KV blocks the request occupies: its prompt blocks (+ a trailing partial block),
  plus generated-token blocks when output tracking is on. With assume_kv_reuse, full prompt blocks
  are reference-counted per instance by hash, so a prefix shared by concurrent requests counts once.
"""

from __future__ import annotations

from collections import _count_elements  # type: ignore[attr-defined]
from itertools import compress
from typing import Iterable

from dynamo_mono.engine import InstanceKey

_ONE = 1


class InstanceLoad:
    """Load counters of one instance plus its capacity facts (for busy thresholds)."""

    __slots__ = ("prefill_tokens", "decode_blocks", "requests", "shared", "total_blocks",
                 "max_num_batched_tokens")

    def __init__(self, total_blocks: int | None, max_num_batched_tokens: int | None) -> None:
        self.prefill_tokens = 0
        self.decode_blocks = 0
        self.requests = 0
        self.shared: dict[int, int] = {}  # prompt block hash -> active requests using it
        self.total_blocks = total_blocks
        self.max_num_batched_tokens = max_num_batched_tokens

    def as_dict(self) -> dict:
        return {"active_prefill_tokens": self.prefill_tokens, "active_decode_blocks": self.decode_blocks,
                "active_requests": self.requests, "total_blocks": self.total_blocks}


class _Request:
    __slots__ = ("key", "load", "prefill", "hashes", "private", "tokens", "reserved")

    def __init__(self, key: InstanceKey, load: InstanceLoad, prefill: int, hashes: list[int] | None,
                 private: int, tokens: int, reserved: int = 0) -> None:
        self.key = key
        self.load = load
        self.prefill = prefill  # prefill tokens still counted on the instance
        self.hashes = hashes  # reference-counted prompt blocks (None when not shared); not copied
        self.private = private  # blocks counted for this request alone
        self.tokens = tokens  # prompt + generated tokens so far
        self.reserved = reserved  # tokens whose blocks were counted at the start (prompt + expected output)


class ActiveLoad:
    """Tracks active requests per instance; all updates are O(1) except dispatch/finish (O(blocks))."""

    def __init__(self, block_size: int, *, assume_kv_reuse: bool = True, track_blocks: bool = True,
                 track_output_blocks: bool = False, decode_blocks_threshold: float | None = None,
                 prefill_tokens_threshold: int | None = None,
                 prefill_tokens_threshold_frac: float | None = None) -> None:
        self.block_size = block_size
        self.assume_kv_reuse = assume_kv_reuse
        self.track_blocks = track_blocks
        self.track_output_blocks = track_output_blocks and track_blocks
        self.decode_blocks_threshold = decode_blocks_threshold
        self.prefill_tokens_threshold = prefill_tokens_threshold
        self.prefill_tokens_threshold_frac = prefill_tokens_threshold_frac
        self.has_thresholds = (decode_blocks_threshold is not None or prefill_tokens_threshold is not None
                               or prefill_tokens_threshold_frac is not None)
        self.loads: dict[InstanceKey, InstanceLoad] = {}
        self._requests: dict[str, _Request] = {}

    # --- instances ------------------------------------------------------------------------
    def add_instance(self, key: InstanceKey, total_blocks: int | None = None,
                     max_num_batched_tokens: int | None = None) -> None:
        load = self.loads.get(key)
        if load is None:
            self.loads[key] = InstanceLoad(total_blocks, max_num_batched_tokens)
            return
        if total_blocks is not None:
            load.total_blocks = total_blocks
        if max_num_batched_tokens is not None:
            load.max_num_batched_tokens = max_num_batched_tokens

    def remove_instance(self, key: InstanceKey) -> list[str]:
        """Forget key and its requests (a later finish of them is a no-op); returns their ids."""
        if self.loads.pop(key, None) is None:
            return []
        gone = [rid for rid, r in self._requests.items() if r.key == key]
        for rid in gone:
            del self._requests[rid]
        return gone

    # --- requests -------------------------------------------------------------------------
    def start(self, request_id: str, key: InstanceKey, block_hashes: list[int], num_tokens: int,
              overlap_blocks: int, expected_output_tokens: int = 0) -> None:
        """Count a request on key (re-pointing it if it was tracked elsewhere). With an expected output
        length (the client's hint), the blocks that output will need are counted from the start."""
        if request_id in self._requests:
            self.finish(request_id)
        load = self.loads[key]
        bs = self.block_size
        prefill = max(num_tokens - overlap_blocks * bs, 0)
        hashes: list[int] | None = None
        private = 0
        if self.track_blocks:
            total = -(-num_tokens // bs)
            if self.assume_kv_reuse and block_hashes:
                hashes = block_hashes  # chained hashes are unique; finish() relies on it (and self-heals)
                shared = load.shared
                before = len(shared)
                _count_elements(shared, hashes)  # C loop: shared[h] += 1 for each h
                private = max(total - len(block_hashes), 0)
                load.decode_blocks += len(shared) - before + private
            else:
                private = total
                load.decode_blocks += total
            if expected_output_tokens > 0:
                ahead = -(-(num_tokens + expected_output_tokens) // bs) - total
                private += ahead
                load.decode_blocks += ahead
        load.prefill_tokens += prefill
        load.requests += 1
        self._requests[request_id] = _Request(key, load, prefill, hashes, private, num_tokens,
                                              num_tokens + max(expected_output_tokens, 0))

    def first_token(self, request_id: str) -> bool:
        """Prefill finished: its tokens stop counting. True when it was still prefilling."""
        r = self._requests.get(request_id)
        if r is None or not r.prefill:
            return False
        r.load.prefill_tokens -= r.prefill
        r.prefill = 0
        return True

    def tokens(self, request_id: str, n: int) -> None:
        """n tokens generated: grows the request's blocks when output tracking is on."""
        if not self.track_output_blocks:
            return
        r = self._requests.get(request_id)
        if r is None:
            return
        bs = self.block_size
        floor = r.reserved
        before = -(-max(r.tokens, floor) // bs)
        r.tokens += n
        grow = -(-max(r.tokens, floor) // bs) - before
        if grow:
            r.private += grow
            r.load.decode_blocks += grow

    def finish(self, request_id: str) -> InstanceKey | None:
        """Stop counting a request; returns its instance, None when it was not tracked."""
        r = self._requests.pop(request_id, None)
        if r is None:
            return None
        load = r.load
        load.prefill_tokens -= r.prefill
        load.requests -= 1
        freed = r.private
        if r.hashes is not None:
            shared = load.shared
            hashes = r.hashes
            counts = list(map(shared.__getitem__, hashes))
            shared.update(zip(hashes, map(_ONE.__rsub__, counts)))  # shared[h] -= 1, in C
            last = list(compress(hashes, map(_ONE.__eq__, counts)))
            for h in last:
                del shared[h]
            freed += len(last)
        load.decode_blocks -= freed
        if not load.requests:  # nothing in flight: drop any drift (e.g. duplicate hashes in a prompt)
            load.shared.clear()
            load.decode_blocks = load.prefill_tokens = 0
        return r.key

    def tracked(self, request_id: str) -> InstanceKey | None:
        r = self._requests.get(request_id)
        return None if r is None else r.key

    # --- queries --------------------------------------------------------------------------
    def is_busy(self, key: InstanceKey) -> bool:
        """Over any configured threshold (unknown capacity never makes an instance busy)."""
        load = self.loads[key]
        thr = self.decode_blocks_threshold
        if thr is not None and load.total_blocks and load.decode_blocks > thr * load.total_blocks:
            return True
        thr_tok = self.prefill_tokens_threshold
        if thr_tok is not None and load.prefill_tokens > thr_tok:
            return True
        frac = self.prefill_tokens_threshold_frac
        if frac is not None and load.max_num_batched_tokens and \
                load.prefill_tokens > frac * load.max_num_batched_tokens:
            return True
        return False

    def snapshot(self, keys: Iterable[InstanceKey] | None = None) -> dict[InstanceKey, dict]:
        loads = self.loads
        return {k: loads[k].as_dict() for k in (loads if keys is None else keys) if k in loads}
