"""The mocker's embedding models: deterministic unit vectors that put similar texts close, served in timed steps.

Vectors: each input is a bag of hashed token unigrams and bigrams; every feature owns a fixed random direction
(a seeded Gaussian projection, the same in every instance and process), and the embedding is the normalised sum
of its features' directions. Texts sharing tokens share directions, so their cosine similarity is high, while
unrelated texts are nearly orthogonal (random directions in `dim` dimensions) — retrieval tests mean something.
Truncating to `dimensions` and renormalising keeps that property (a shorter random projection), which is why
the mocker's cards allow `dimensions` (Matryoshka) by default.

Timing: inputs of all requests queue FIFO per dp rank and run in engine steps of at most --max-num-seqs inputs,
--max-num-batched-tokens tokens and --num-gpu-blocks-override KV blocks (an input over the token budget runs
alone); a step takes the perf model's prefill time of its inputs, divided by --speedup-ratio (0 = no sleep).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dynamo_mono.engine import EngineError
from mocker.perf_model import PerfModel

FEATURE_BITS = 12  # 4096 hashed features: collisions stay rare for short texts, the projection stays small
PROJECTION_SEED = 0x5EED
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_SHIFT = np.uint64(64 - FEATURE_BITS)
_CATCH_UP_S = 0.003


class HashedEmbedder:
    """Token lists -> unit vectors (see the module docstring); deterministic for a given dimension, and an input's
    vector does not depend on the other inputs of its batch."""

    CHUNK = 16  # inputs gathered at once: keeps the gathered feature rows in cache (~4x faster than 256)

    def __init__(self, dim: int) -> None:
        rng = np.random.default_rng(PROJECTION_SEED)
        self.dim = dim
        # One direction per feature, plus a zero row: the "bigram" across two inputs' boundary maps to it.
        self.projection = np.zeros(((1 << FEATURE_BITS) + 1, dim), dtype=np.float32)
        self.projection[:-1] = rng.standard_normal((1 << FEATURE_BITS, dim), dtype=np.float32)
        self._zero = np.uint64(1 << FEATURE_BITS)

    def embed(self, inputs: list[list[int]], dimensions: int | None = None) -> np.ndarray:
        """float32 (len(inputs), dimensions or dim), each row of unit norm. Every input has >= 1 token."""
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for a in range(0, len(inputs), self.CHUNK):
            self._sums(inputs[a:a + self.CHUNK], out[a:a + self.CHUNK])
        if dimensions is not None and dimensions < self.dim:
            out = np.ascontiguousarray(out[:, :dimensions])
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.maximum(norms, np.float32(1e-12), out=norms)
        out /= norms
        return out

    def _sums(self, inputs: list[list[int]], out: np.ndarray) -> None:
        """out[i] = the sum of input i's unigram and bigram directions, all inputs hashed at once."""
        lens = np.fromiter(map(len, inputs), dtype=np.int64, count=len(inputs))
        ends = np.cumsum(lens)
        starts = ends - lens
        flat = np.fromiter(itertools.chain.from_iterable(inputs), dtype=np.uint64, count=int(ends[-1]))
        with np.errstate(over="ignore"):
            uni = (flat * _K1) >> _SHIFT
            bi = np.empty_like(flat)
            bi[:-1] = (((flat[:-1] * _K1) ^ (flat[1:] * _K2)) * _K3) >> _SHIFT
        bi[ends - 1] = self._zero  # an input's last token starts no bigram of its own
        proj = self.projection
        np.add(np.add.reduceat(proj[uni], starts, axis=0), np.add.reduceat(proj[bi], starts, axis=0), out=out)


@dataclass(eq=False)
class _Job:
    """One embed() call waiting for its inputs to run."""

    inputs: list[list[int]]
    dimensions: int | None
    future: asyncio.Future
    out: np.ndarray
    scheduled: int = 0  # inputs handed to a step so far
    done: int = 0  # inputs embedded so far
    blocks: list[int] = field(default_factory=list)


class EmbedScheduler:
    """One dp rank's embedding queue and step loop."""

    def __init__(self, embedder: HashedEmbedder, perf: PerfModel, *, speedup: float, max_num_seqs: int,
                 max_num_batched_tokens: int, num_blocks: int, block_size: int) -> None:
        self.embedder = embedder
        self.perf = perf
        self.speedup = speedup
        self.max_seqs = max_num_seqs
        self.max_tokens = max_num_batched_tokens
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.jobs: deque[_Job] = deque()
        self.running = 0  # inputs in the step now running
        self.waiting = 0  # inputs queued, not yet in a step
        self.steps = 0
        self.task: asyncio.Task | None = None

    async def submit(self, inputs: list[list[int]], dimensions: int | None) -> np.ndarray:
        """Embed inputs (as part of the steps to come); the vectors once the last of them ran."""
        loop = asyncio.get_running_loop()
        dim = dimensions or self.embedder.dim
        job = _Job(inputs, dimensions, loop.create_future(), np.empty((len(inputs), dim), dtype=np.float32))
        self.jobs.append(job)
        self.waiting += len(inputs)
        if self.task is None:
            self.task = loop.create_task(self._run())
        try:
            return await job.future
        finally:
            if not job.future.done():  # cancelled: give back what never ran
                job.future.cancel()
            self._drop(job)

    def _drop(self, job: _Job) -> None:
        if job.scheduled < len(job.inputs):
            self.waiting -= len(job.inputs) - job.scheduled
            job.scheduled = len(job.inputs)
        try:
            self.jobs.remove(job)
        except ValueError:
            pass

    def fail_all(self, message: str) -> None:
        """The instance stopped or crashed: every waiting embed() raises a retryable EngineError."""
        for job in list(self.jobs):
            if not job.future.done():
                job.future.set_exception(EngineError(message))
            self._drop(job)

    def _take(self) -> list[tuple[_Job, int, int]]:
        """The next step's inputs, FIFO: (job, first, end) slices within the seq, token and KV-block budgets."""
        step: list[tuple[_Job, int, int]] = []
        seqs = tokens = blocks = 0
        bs = self.block_size
        for job in self.jobs:
            a = b = job.scheduled
            while b < len(job.inputs) and seqs < self.max_seqs:
                n = len(job.inputs[b])
                need = -(-n // bs)
                if seqs and (tokens + n > self.max_tokens or blocks + need > self.num_blocks):
                    break
                seqs, tokens, blocks = seqs + 1, tokens + n, blocks + need
                b += 1
            if b > a:
                job.scheduled = b
                step.append((job, a, b))
            if b < len(job.inputs):
                break  # the budget is spent
        return step

    async def _run(self) -> None:
        deadline = time.perf_counter()
        try:
            while self.jobs:
                step = self._take()
                if not step:
                    break
                n = sum(b - a for _, a, b in step)
                self.waiting -= n
                self.running = n
                if self.speedup > 0:
                    ms = self.perf.step_ms([(len(ids), 0, 1.0) for job, a, b in step for ids in job.inputs[a:b]],
                                           0, 0)
                    now = time.perf_counter()
                    if deadline < now - _CATCH_UP_S:
                        deadline = now
                    deadline += ms / 1000.0 / self.speedup
                    await asyncio.sleep(max(0.0, deadline - now))
                else:
                    await asyncio.sleep(0)
                self._complete(step)
                self.running = 0
                self.steps += 1
        finally:
            self.running = 0
            self.task = None

    def _complete(self, step: list[tuple[_Job, int, int]]) -> None:
        live = [(job, a, b) for job, a, b in step if not job.future.done()]
        if not live:
            return
        vectors = self.embedder.embed([ids for job, a, b in live for ids in job.inputs[a:b]])
        row = 0
        for job, a, b in live:
            part = vectors[row:row + b - a]
            row += b - a
            if job.dimensions is not None and job.dimensions < self.embedder.dim:
                part = part[:, :job.dimensions]
                part = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), np.float32(1e-12))
            job.out[a:b] = part
            job.done += b - a
            if job.done == len(job.inputs):
                job.future.set_result(job.out)

    async def stop(self) -> None:
        self.fail_all("mocker: engine stopped")
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
