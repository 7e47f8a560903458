"""Per-request state of the mocker: tokens, KV blocks, progress, pending outputs and stop logic."""

from __future__ import annotations

import asyncio
from array import array

from dynamo_mono.block_hash import MediaSpan, block_hash, block_hashes, block_media, lora_seed
from dynamo_mono.engine import EngineRequest
from mocker.outputs import TokenSource

WAITING, RUNNING, FINISHED = 0, 1, 2
_NO_IDS: frozenset[int] = frozenset()


class Sequence:
    """One request inside a scheduler. Plain attributes, no per-token allocation beyond list appends."""

    __slots__ = (
        "request", "rid", "tokens", "prompt_len", "hashes", "blocks", "num_computed", "num_cached_blocks",
        "pos", "generated", "max_tokens", "min_tokens", "priority", "arrival", "source", "stop_ids",
        "eos_id", "eos_pos", "pending", "pending_pos", "finish", "stop_token_id", "error", "waiter",
        "cached_tokens", "status", "fail_after", "slow_prefill", "dp_rank", "first_sent", "logprobs",
        "media", "encoded", "seed",
    )

    def __init__(self, request: EngineRequest, source: TokenSource, *, block_size: int, prefix_caching: bool,
                 arrival: int, migrated: int = 0, eos_ids: list[int] | None = None,
                 fail_after: int | None = None, slow_prefill: float = 1.0, dp_rank: int = 0) -> None:
        self.request = request
        self.rid = request.request_id
        self.tokens = array("I", request.token_ids)  # 4 bytes a token, not a list of int objects
        self.prompt_len = len(self.tokens)
        # block index -> content hashes of the media whose placeholders it holds (mixed into its hash)
        self.media: dict[int, list[int]] = {}
        self.encoded: set[int] = set()  # indexes of request.media this sequence's encoder work has covered
        spans = [MediaSpan(m.content_hash, m.start, m.length) for m in request.media]
        if spans:
            self.media = block_media((self.prompt_len + block_size - 1) // block_size, block_size, spans)
        self.seed = lora_seed(request.lora_name)  # an adapter's blocks live in their own hash space
        given = request.block_hashes  # the frontend's, when it hashed with this block size
        if not prefix_caching:
            self.hashes: list[int] = []
        elif given is not None and len(given) == self.prompt_len // block_size:
            self.hashes = list(given)
        else:
            self.hashes = block_hashes(self.tokens, block_size, media=spans, seed=self.seed)
        self.blocks: list[int] = []
        self.num_computed = 0
        self.num_cached_blocks = 0
        self.pos = migrated  # absolute output position of the next generated token
        self.generated = 0
        stop = request.stop
        self.max_tokens = stop.max_tokens
        self.min_tokens = stop.min_tokens or 0
        self.priority = request.priority
        self.arrival = arrival
        self.source = source
        eos = list(stop.eos_token_ids or eos_ids or [])
        self.eos_id = eos[0] if eos else None
        ids = set(stop.stop_token_ids or ())
        if not stop.ignore_eos:
            ids.update(eos)
        self.stop_ids = frozenset(ids) if ids else _NO_IDS
        if stop.ignore_eos or self.eos_id is None or source.eos_pos is None:
            self.eos_pos = -1
        else:
            self.eos_pos = max(source.eos_pos, migrated + self.min_tokens)
        self.pending: list[int] = []
        self.pending_pos = migrated
        self.finish: str | None = None
        self.stop_token_id: int | None = None
        self.error: str | None = None
        self.waiter: asyncio.Future | None = None
        self.cached_tokens: int | None = None
        self.status = WAITING
        self.fail_after = fail_after
        self.slow_prefill = slow_prefill
        self.dp_rank = dp_rank
        self.first_sent = False
        lp = request.sampling.logprobs
        self.logprobs = lp if isinstance(lp, int) and not isinstance(lp, bool) and lp >= 0 else None
        if fail_after is not None and fail_after <= 0:
            self.fail(f"mocker: injected failure after {fail_after} tokens")

    def ensure_hashes(self, n_full: int, block_size: int) -> list[int]:
        """Extend self.hashes to cover the first n_full full blocks of self.tokens."""
        hashes = self.hashes
        tokens = self.tokens
        media = self.media
        while len(hashes) < n_full:
            i = len(hashes)
            hashes.append(block_hash(hashes[-1] if i else None, tokens[i * block_size:(i + 1) * block_size],
                                     media.get(i, ()) if media else (), self.seed))
        return hashes

    def advance(self) -> bool:
        """Produce the next output token (or finish); True when the sequence finished."""
        pos = self.pos
        if pos == self.eos_pos:
            self.finish = "stop"
            self.stop_token_id = self.eos_id
            return True
        src = self.source
        tok = src.chunk[pos - src.lo] if src.lo <= pos < src.hi else src.token(pos)
        if self.stop_ids and tok in self.stop_ids:
            if self.generated < self.min_tokens:
                tok = self.source.alternative(pos, set(self.stop_ids))
            else:
                self.finish = "stop"
                self.stop_token_id = tok
                return True
        self.tokens.append(tok)
        self.pending.append(tok)
        self.pos = pos + 1
        g = self.generated = self.generated + 1
        if g >= self.max_tokens:
            self.finish = "length"
            return True
        if self.fail_after is not None and g >= self.fail_after:
            self.fail(f"mocker: injected failure after {g} tokens")
            return True
        return False

    def fail(self, message: str) -> None:
        self.finish = "error"
        self.error = message

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)
