"""Workload generators: prompts of a target token length as request bodies (random, shared prefix, prefix groups, trace).

A remote client cannot use the server's tokenizer, so prompts are built from a pool of words that are each
exactly one token of the benchmark tokenizer (`--tokenizer DIR`, default the embedded tiny ChatML one) and
stay one token when joined with spaces; N words are then N prompt tokens (plus the chat template's own
tokens, which are subtracted). `--api completions-tokens` sends the token ids themselves.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import orjson

from dynamo_mono.bench.config import BenchConfig


@dataclass(slots=True)
class Prompt:
    """One request to send: its serialized JSON body, prompt and output lengths, and its arrival time for traces."""

    body: bytes
    isl: int
    osl: int
    at_s: float | None = None


class WordPool:
    """Words (and their token ids) that are one token each and concatenate without merging."""

    def __init__(self, tokenizer_dir: str | None = None) -> None:
        from dynamo_mono.preprocess.model_dir import load_model_dir

        info = load_model_dir(tokenizer_dir)
        tok = info.tokenizer
        words: list[str] = []
        ids: list[int] = []
        for i in range(tok.vocab_size):
            if i in tok.special_ids:
                continue
            text = tok.decode([i], skip_special_tokens=False)
            # " word" (leading space, letters only) is its own pre-token: joined words cannot merge.
            if len(text) >= 3 and text[0] == " " and text[1:].isascii() and text[1:].isalpha() and tok.encode(text) == [i]:
                words.append(text)
                ids.append(i)
        if len(words) < 16:
            raise ValueError(f"tokenizer {tokenizer_dir or 'tiny-chatml'}: too few single-token words ({len(words)}) to build prompts")
        self.words = words
        self.ids = ids
        self.tokenizer = tok
        self.chat_overhead = 0
        if info.chat_template is not None:
            rendered = info.chat_template.render([{"role": "user", "content": ""}], add_generation_prompt=True)
            self.chat_overhead = len(tok.encode(rendered, add_special_tokens=False))

    def text(self, idx: list[int]) -> str:
        w = self.words
        return "".join([w[i] for i in idx])

    def token_ids(self, idx: list[int]) -> list[int]:
        ids = self.ids
        return [ids[i] for i in idx]


class BodyMaker:
    """Turns pool indices + output length into the request body for the configured API."""

    def __init__(self, config: BenchConfig, pool: WordPool, model: str) -> None:
        self.api = config.api
        self.pool = pool
        self.overhead = pool.chat_overhead if config.api == "chat" else 0
        self.base: dict = {"model": model, "stream": config.stream}
        if config.stream:
            self.base["stream_options"] = {"include_usage": True}
        if config.use_ignore_eos:
            # Top-level is understood by vLLM, SGLang, Dynamo 1.6.1 and dynamo-mono; Dynamo 1.6.1 rejects nvext.ignore_eos.
            if config.eos_field in ("top", "both"):
                self.base["ignore_eos"] = True
            if config.eos_field in ("nvext", "both"):
                self.base["nvext"] = {"ignore_eos": True}

    def make(self, idx: list[int], osl: int, at_s: float | None = None) -> Prompt:
        """idx are pool indices of the whole prompt; for chat the template's tokens replace its tail."""
        if self.overhead:
            idx = idx[: max(1, len(idx) - self.overhead)]
        body = dict(self.base)
        body["max_tokens"] = osl
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": self.pool.text(idx)}]
        elif self.api == "completions":
            body["prompt"] = self.pool.text(idx)
        else:
            body["prompt"] = self.pool.token_ids(idx)
        return Prompt(orjson.dumps(body), len(idx) + self.overhead, osl, at_s)


def _random_idx(rng: np.random.Generator, n_words: int, k: int) -> list[int]:
    return rng.integers(0, n_words, k).tolist()


def generate(config: BenchConfig, pool: WordPool, model: str) -> Iterator[Prompt]:
    """Prompts for config.workload, endless except for traces (which end with the file)."""
    maker = BodyMaker(config, pool, model)
    rng = random.Random(config.seed)
    nrng = np.random.default_rng(config.seed)
    n = len(pool.words)
    kind, _, arg = config.workload.partition(":")
    if kind == "random":
        while True:
            yield maker.make(_random_idx(nrng, n, config.isl.sample(rng)), config.osl.sample(rng))
    elif kind == "shared-prefix":
        prefix = _random_idx(nrng, n, config.prefix_len)
        while True:
            isl = max(config.isl.sample(rng), config.prefix_len + 1)
            yield maker.make(prefix + _random_idx(nrng, n, isl - config.prefix_len), config.osl.sample(rng))
    elif kind == "prefix-groups":
        from mocker.traces import synthesize_prefix_groups

        isl = int(round(config.isl.a)) if config.isl.fixed else int(round(config.isl.a if config.isl.kind == "normal" else (config.isl.a + config.isl.b) / 2))
        reqs = synthesize_prefix_groups(config.num_groups, 10**9, config.prefix_len, max(isl - config.prefix_len, 1),
                                        0, seed=config.seed)
        # Each round has one request per group, in a random (seeded) order: users of different groups do
        # not arrive in lockstep, and a fixed order would let round-robin routing be affine by accident.
        while True:
            round_ = list(itertools.islice(reqs, config.num_groups))
            if not round_:
                return
            rng.shuffle(round_)
            for r in round_:
                yield maker.make([t % n for t in r.token_ids], config.osl.sample(rng))
    else:
        from mocker.traces import load_mooncake

        t0 = None
        for r in load_mooncake(arg):
            t0 = r.timestamp_ms if t0 is None else t0
            osl = r.output_length if r.output_length > 0 else config.osl.sample(rng)
            idx = [t % n for t in r.token_ids] or [0]
            yield maker.make(idx, osl, (r.timestamp_ms - t0) / 1000.0 * config.trace_time_scale)


def take(prompts: Iterator[Prompt], k: int) -> list[Prompt]:
    """The first k prompts (fewer if the workload ends)."""
    return list(itertools.islice(prompts, k))
