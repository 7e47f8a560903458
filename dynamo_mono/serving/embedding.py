"""Embedding requests, API-neutral: inputs (text or token ids) -> checked token lists -> batches on the pool."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynamo_mono.engine import EmbeddingOutput, EmbeddingRequest
from dynamo_mono.serving.admission import HeldSlots
from dynamo_mono.serving.chat import admission_queues
from dynamo_mono.serving.errors import ContextLengthExceeded, InvalidRequest
from dynamo_mono.serving.model import FAST_INLINE_CHARS, ServedModel
from dynamo_mono.serving.pool import InstancePool


# Characters of short texts encoded between two yields to the event loop (the model's inline-encode bound).
INLINE_CHARS = FAST_INLINE_CHARS


@dataclass(slots=True)
class EmbeddingParams:
    """What a client may ask of an embedding request besides its inputs."""

    dimensions: int | None = None  # truncate + renormalise to this many (Matryoshka models only)
    truncate_prompt_tokens: int | None = None  # keep the last k tokens of each input; -1 = the context length
    priority: int = 0  # lower = more urgent


@dataclass(slots=True)
class EmbeddingResult:
    """The vectors of every input, in input order, and the tokens they took."""

    embeddings: np.ndarray  # float32 (inputs, dimensions)
    prompt_tokens: int


def check_dimensions(model: ServedModel, dimensions: int | None) -> int | None:
    """The dimensions to ask the engine for (None = the model's own); 400 when the model cannot give them."""
    card = model.pool.card()
    if dimensions is None or card is None:  # no instance yet: admission answers 503 before anything runs
        return dimensions
    full = card.embedding_dim or 0
    if dimensions > full:
        raise InvalidRequest(f"dimensions={dimensions} is larger than the {full} dimensions of model "
                             f"'{model.name}'", param="dimensions")
    if dimensions == full:
        return None
    if not card.matryoshka:
        raise InvalidRequest(f"model '{model.name}' does not support dimensions other than its {full} (it is not a "
                             f"Matryoshka model)", param="dimensions")
    allowed = card.matryoshka_dimensions
    if allowed and dimensions not in allowed:
        raise InvalidRequest(f"model '{model.name}' supports dimensions {sorted(allowed)} only, not {dimensions}",
                             param="dimensions")
    return dimensions


async def embedding_job(state: Any, model: ServedModel, inputs: list[str | list[int]], params: EmbeddingParams,
                        rid: str) -> "EmbeddingJob":
    """Tokenize and check every input (400 naming the input on a bad one) and split them into engine batches."""
    s = state.settings
    if len(inputs) > s.max_embedding_inputs:
        raise InvalidRequest(f"{len(inputs)} inputs is more than the server limit of {s.max_embedding_inputs} "
                             f"per request", param="input")
    dimensions = check_dimensions(model, params.dimensions)
    ctx = model.max_model_len
    keep = ctx if params.truncate_prompt_tokens == -1 else params.truncate_prompt_tokens
    vocab = model.tokenizer.vocab_size
    t0 = time.perf_counter()
    token_lists = await _tokenize_all(model, inputs)
    for i, ids in enumerate(token_lists):
        if not isinstance(inputs[i], str) and any(t >= vocab for t in ids):
            raise InvalidRequest(f"input[{i}] has a token id out of range (vocab size {vocab})", param="input")
        if not ids:
            raise InvalidRequest(f"input[{i}] is empty", param="input")
        if keep is not None and len(ids) > keep:
            token_lists[i] = ids = ids[-keep:]
        if len(ids) > ctx:
            raise ContextLengthExceeded(f"input[{i}] has {len(ids)} tokens, more than the maximum context length of "
                                        f"{ctx} tokens of model '{model.name}'; shorten it or set "
                                        f"truncate_prompt_tokens", param="input")
    if state.metrics is not None:
        state.metrics.model(model.name).tokenize.observe(time.perf_counter() - t0)
    size = s.embedding_batch_size
    batches = [token_lists[i:i + size] for i in range(0, len(token_lists), size)]
    requests = [EmbeddingRequest(f"{rid}-b{k}" if len(batches) > 1 else rid, b, dimensions=dimensions,
                                 model=model.name, priority=params.priority) for k, b in enumerate(batches)]
    return EmbeddingJob(model.pool, requests, sum(map(len, token_lists)), metrics=state.metrics, model=model.name,
                        admission=admission_queues(state, model))


async def _tokenize_all(model: ServedModel, inputs: list[str | list[int]]) -> list[list[int]]:
    """Token ids of every input. Short texts are encoded together inline, yielding to the event loop after every
    INLINE_CHARS characters (a request of 2048 texts must not stall other requests' streams); a long text goes
    through model.tokenize (off the loop)."""
    out: list[Any] = list(inputs)
    encode_batch = model.tokenizer.encode_batch
    where: list[int] = []
    texts: list[str] = []
    chars = 0
    for i, item in enumerate(inputs):
        if not isinstance(item, str):
            continue
        if len(item) > INLINE_CHARS:
            out[i] = await model.tokenize(item)
            continue
        where.append(i)
        texts.append(item)
        chars += len(item)
        if chars >= INLINE_CHARS:
            for j, ids in zip(where, encode_batch(texts)):
                out[j] = ids
            where, texts, chars = [], [], 0
            await asyncio.sleep(0)
    for j, ids in zip(where, encode_batch(texts) if texts else ()):
        out[j] = ids
    return out


class EmbeddingJob:
    """One embeddings API request: its engine batches, run concurrently over the pool, under admission."""

    def __init__(self, pool: InstancePool, requests: list[EmbeddingRequest], prompt_tokens: int, *,
                 metrics: Any = None, model: str = "", admission: tuple = ()) -> None:
        self.pool = pool
        self.requests = requests
        self.prompt_tokens = prompt_tokens
        self.metrics = metrics
        self.model = model
        self.slots = HeldSlots(admission)
        self._observed = False
        self.started = time.perf_counter()

    async def admit(self) -> None:
        """Routing preconditions (every batch could be placed) and the admission queues, before any engine work."""
        for req in self.requests:
            self.pool.preflight(req)
        await self.slots.take(self.requests[0].priority, self.metrics.model(self.model).queued if self.metrics is not None else None)

    async def run(self) -> EmbeddingResult:
        """Every batch on the pool at once (the router spreads them); the first failure cancels the others."""
        if len(self.requests) == 1:
            outs = [await self.pool.embed(self.requests[0])]
        else:
            tasks = [asyncio.ensure_future(self.pool.embed(r)) for r in self.requests]
            try:
                outs = await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return EmbeddingResult(_stack(outs), sum(o.prompt_tokens for o in outs))

    def finish(self) -> None:
        """Release admission slots and record metrics; idempotent."""
        self.slots.release()
        if not self._observed:
            self._observed = True
            if self.metrics is not None:
                m = self.metrics.model(self.model)
                m.duration.observe(time.perf_counter() - self.started)
                m.isl.observe(self.prompt_tokens)


def _stack(outs: list[EmbeddingOutput]) -> np.ndarray:
    if len(outs) == 1:
        return np.asarray(outs[0].embeddings, dtype=np.float32)
    return np.concatenate([o.embeddings for o in outs]).astype(np.float32, copy=False)
