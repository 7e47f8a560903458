"""An engine that streams the prompt's tokens back: the smallest complete Engine implementation."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from dynamo_mono.api import EngineArgs, EngineOutput, EngineRequest, LoadMetrics, ModelCard


class EchoEngine:
    """Echoes the prompt (after the last `<|im_start|>user` turn, if any) one token per step."""

    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.delay = float(args.options.get("echo_delay") or 0.0)
        self.running: dict[str, asyncio.Task | None] = {}
        self._aborted: set[str] = set()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._aborted.update(self.running)

    def model_card(self) -> ModelCard:
        return ModelCard(name=self.args.served_model_name, max_model_len=self.args.max_model_len, block_size=16,
                         eos_token_ids=list(self.args.eos_token_ids))

    def _echo_ids(self, prompt: list[int]) -> list[int]:
        tok = self.args.tokenizer
        text = tok.decode(prompt, skip_special_tokens=False)
        marker = "<|im_start|>user\n"
        if marker in text:
            text = text.rsplit(marker, 1)[1].split("<|im_end|>", 1)[0]
        return tok.encode(text)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        rid = request.request_id
        self.running[rid] = None
        try:
            ids = self._echo_ids(request.token_ids)
            limit = request.stop.max_tokens
            yield EngineOutput(prompt_tokens=len(request.token_ids), cached_tokens=0)
            for i, t in enumerate(ids[:limit]):
                if rid in self._aborted:
                    return
                if t in request.stop.stop_token_ids:
                    yield EngineOutput(finish_reason="stop", stop_token_id=t)
                    return
                if self.delay:
                    await asyncio.sleep(self.delay)
                last = i + 1 == min(len(ids), limit)
                finish = None if not last else ("length" if len(ids) >= limit else "stop")
                yield EngineOutput(token_ids=[t], finish_reason=finish)
            if not ids:
                yield EngineOutput(finish_reason="stop")
        finally:
            self.running.pop(rid, None)
            self._aborted.discard(rid)

    async def abort(self, request_id: str) -> None:
        if request_id in self.running:
            self._aborted.add(request_id)

    def set_kv_event_sink(self, sink) -> None:
        pass  # no prefix cache, so no KV events: the router uses its approximate mode

    def kv_snapshot(self) -> list:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics(running=len(self.running))]

    def healthy(self) -> bool:
        return True
