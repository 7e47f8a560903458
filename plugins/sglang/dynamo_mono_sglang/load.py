"""Polls SGLang's per-dp-rank load snapshots (TokenizerManager.get_loads) into LoadMetrics for the router."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dynamo_mono.api import LoadMetrics

log = logging.getLogger("dynamo_mono.sglang.load")


class LoadPoller:
    """Latest LoadSnapshot per dp rank (running / waiting requests, KV tokens in use, prefix hit rate)."""

    def __init__(self, dp_size: int, page_size: int, interval_s: float) -> None:
        self.page_size = page_size
        self.interval_s = interval_s
        self.metrics = [LoadMetrics(dp_rank=r) for r in range(dp_size)]
        self.total_tokens = 0
        self._task: asyncio.Task | None = None

    async def refresh(self, tokenizer_manager: Any) -> None:
        """Read every rank's snapshot once (sglang 0.5.23: `await tokenizer_manager.get_loads()`)."""
        for snap in await tokenizer_manager.get_loads():
            r = snap.dp_rank
            if not 0 <= r < len(self.metrics):
                continue
            ps = self.page_size
            self.total_tokens = max(self.total_tokens, snap.max_total_num_tokens)
            self.metrics[r] = LoadMetrics(
                dp_rank=r, running=snap.num_running_reqs, waiting=snap.num_waiting_reqs,
                kv_active_blocks=-(-snap.num_used_tokens // ps), kv_total_blocks=snap.max_total_num_tokens // ps,
                prefix_hit_rate=float(snap.cache_hit_rate))

    def start(self, tokenizer_manager: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(tokenizer_manager))

    async def _run(self, tokenizer_manager: Any) -> None:
        while True:
            try:
                await self.refresh(tokenizer_manager)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed read keeps the last snapshot; the engine's health says the rest
                log.exception("SGLang load snapshot failed")
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
