"""Shared fixtures for mocker tests: a byte-level fake tokenizer, engine/request builders and a virtual clock."""

from __future__ import annotations

import asyncio
import time
import types
from typing import Any

import pytest

import mocker.engine
import mocker.faults

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


_SETTLE_HOPS = 5  # event-loop turns a virtual sleep yields before the clock moves


class VirtualClock:
    """Simulated time for the mocker: its sleeps advance this clock at once instead of waiting, so timing
    behaviour is checked exactly and independently of the machine's speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def read(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float, result: Any = None) -> Any:
        wake = self.now + max(0.0, seconds)
        # Let the tasks that are ready now (a consumer just handed a token) run first, as they would during
        # a real sleep, and only then move the clock to this sleeper's wake time (never back: concurrent
        # sleepers, e.g. two engines' step loops, overlap instead of adding up).
        for _ in range(_SETTLE_HOPS):
            await asyncio.sleep(0)
        self.now = max(self.now, wake)
        return result


class _Asyncio(types.ModuleType):
    """The asyncio module with sleep replaced by the virtual clock's."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__("asyncio")
        self.sleep = clock.sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """The mocker's step loop, faults and start() run on a VirtualClock for this test."""
    clock = VirtualClock()
    fake_time = types.SimpleNamespace(perf_counter=clock.read, monotonic=clock.read, time=time.time)
    monkeypatch.setattr(mocker.engine, "time", fake_time)
    monkeypatch.setattr(mocker.engine, "asyncio", _Asyncio(clock))
    monkeypatch.setattr(mocker.faults, "time", fake_time)
    return clock
