"""Shared fixtures for mocker tests: a byte-level fake tokenizer and engine/request builders."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo_mono.engine import EngineArgs, EngineRequest, SamplingParams, StopConditions
from mocker.engine import MockerEngine

EOS = 256
SPECIALS = frozenset({256, 257, 258, 259})


class FakeTokenizer:
    """UTF-8 bytes as token ids 0..255, plus four special ids (256 = EOS)."""

    vocab_size = 260
    special_ids = SPECIALS

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def make_args(instance_id: int = 1, max_model_len: int = 8192, **options: Any) -> EngineArgs:
    opts = {"speedup_ratio": 0.0}
    opts.update(options)
    reasoning, tool = opts.pop("reasoning_parser", None), opts.pop("tool_call_parser", None)
    return EngineArgs(model_path="fake", served_model_name="fake-model", instance_id=instance_id,
                      max_model_len=max_model_len, eos_token_ids=[EOS], vocab_size=260, options=opts,
                      tokenizer=FakeTokenizer(), reasoning_parser=reasoning, tool_call_parser=tool)


def make_engine(**options: Any) -> MockerEngine:
    return MockerEngine(make_args(**options))


def make_request(rid: str = "r1", tokens: list[int] | None = None, max_tokens: int = 16, *,
                 prompt_len: int = 10, seed: int | None = None, ignore_eos: bool = True, **kw: Any) -> EngineRequest:
    stop_kw = {k: kw.pop(k) for k in ("min_tokens", "stop_token_ids") if k in kw}
    logprobs = kw.pop("logprobs", None)
    return EngineRequest(
        request_id=rid,
        token_ids=list(tokens) if tokens is not None else [(i * 7 + 3) % 250 for i in range(prompt_len)],
        sampling=SamplingParams(seed=seed, logprobs=logprobs),
        stop=StopConditions(max_tokens=max_tokens, eos_token_ids=[EOS], ignore_eos=ignore_eos, **stop_kw),
        **kw,
    )


async def collect(engine: MockerEngine, request: EngineRequest) -> list:
    return [out async for out in engine.generate(request)]


def tokens_of(outputs: list) -> list[int]:
    return [t for o in outputs for t in o.token_ids]


@pytest.fixture
def tokenizer() -> FakeTokenizer:
    return FakeTokenizer()
