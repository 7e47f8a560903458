"""The mocker's simulated vision / audio encoder: time per media item and an encoder-output cache by item uuid.

Like vLLM, an item is encoded in the step whose prefill chunk first reaches its placeholder tokens, and not at all
when those tokens are all prefix-cache hits. Its cost is `ms_per_token` per placeholder token (placeholders grow
with an image's pixels and a video's frames, so the cost does too). Encoder outputs are kept in an LRU keyed by
the item's uuid (Dynamo's multimodal embedding cache, --multimodal-embedding-cache-capacity-gb): a hit costs
nothing. An output takes placeholder tokens x BYTES_PER_TOKEN bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mocker.sequence import Sequence

# One encoder output token: hidden size 3584 (Qwen2-VL-7B's language model) in bf16.
BYTES_PER_TOKEN = 3584 * 2


class EncoderCache:
    """Encoder outputs by media uuid, least recently used out first beyond capacity_bytes (0 = keep nothing)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, int] = OrderedDict()

    def lookup(self, uuid: str, nbytes: int) -> bool:
        """True on a hit (now most recent); on a miss the output is stored (it has just been computed)."""
        if uuid in self._entries:
            self._entries.move_to_end(uuid)
            return True
        if 0 < nbytes <= self.capacity:
            while self.bytes + nbytes > self.capacity:
                _, size = self._entries.popitem(last=False)
                self.bytes -= size
            self._entries[uuid] = nbytes
            self.bytes += nbytes
        return False

    def __len__(self) -> int:
        return len(self._entries)


class MediaEncoder:
    """Charges encoder time for the media items a prefill chunk reaches; one per dp rank."""

    def __init__(self, ms_per_token: float, cache: EncoderCache) -> None:
        self.ms_per_token = ms_per_token
        self.cache = cache
        self.hits = 0
        self.misses = 0

    def charge(self, seq: "Sequence", lo: int, hi: int) -> float:
        """Milliseconds of encoder work for the chunk [lo, hi) of seq's tokens: items it reaches that this
        sequence has not encoded yet and the cache does not hold (hits and misses counted)."""
        ms = 0.0
        for i, item in enumerate(seq.request.media):
            end = item.start + item.length
            if i in seq.encoded or end <= lo or item.start >= hi:
                continue
            seq.encoded.add(i)
            if self.cache.lookup(item.uuid, item.length * BYTES_PER_TOKEN):
                self.hits += 1
            else:
                self.misses += 1
                ms += item.length * self.ms_per_token
        return ms
