"""Generation: n choices fanned out over a (fake) pool, errors and cancels, usage, admission slots and metrics.

Only the public surface is used (admit, steps, finish, usage, the metrics it records); `make_generation` is the
one place that knows the constructor.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from dynamo_mono.engine import EngineError, EngineOutput, EngineRequest, SamplingParams, StopConditions
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.preprocess import load_model_dir
from dynamo_mono.http.errors import to_api_error
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.errors import ServingError
from dynamo_mono.serving.admission import AdmissionQueue
from dynamo_mono.serving.choice import ChoiceState, Step
from dynamo_mono.serving.generation import Generation
from tests.serving.helpers import settle, turns

pytestmark = pytest.mark.timeout(10)

TOK = load_model_dir(None).tokenizer
PROMPT = TOK.encode("<|im_start|>user\nHello there, how are you?<|im_end|>\n<|im_start|>assistant\n")
MODEL = "m"


class FakePool:
    """Stands in for InstancePool: the test feeds each request's outputs; records how each engine stream ended."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.feeds: dict[str, asyncio.Queue] = {}
        self.ended: dict[str, str] = {}  # request_id -> finished | raised | cancelled | closed
        self.started: list[str] = []
        self.refuse = refuse
        self.preflights = 0

    def feed(self, req: EngineRequest | str) -> asyncio.Queue:
        rid = req if isinstance(req, str) else req.request_id
        return self.feeds.setdefault(rid, asyncio.Queue())

    def preflight(self, req: EngineRequest) -> None:
        self.preflights += 1
        if self.refuse is not None:
            raise self.refuse

    async def generate(self, req: EngineRequest) -> AsyncIterator[EngineOutput]:
        rid = req.request_id
        self.started.append(rid)
        how = "closed"  # the consumer stopped pulling (aclose)
        try:
            while True:
                item = await self.feed(rid).get()
                if isinstance(item, BaseException):
                    how = "raised"
                    raise item
                yield item
                if item.finish_reason is not None:
                    how = "finished"
                    return
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        finally:
            self.ended[rid] = how


def make_generation(pool: FakePool, n: int = 1, *, prompts: list[list[int]] | None = None, stops: list[str] = (),
                    admission: tuple = (), metrics: FrontendMetrics | None = None, priority: int = 0) -> Generation:
    """n choices of each prompt, as the chat / completions handlers build them."""
    prompts = prompts or [PROMPT]
    reqs, states = [], []
    for pi, prompt in enumerate(prompts):
        for ci in range(n):
            reqs.append(EngineRequest(f"req-{pi}-{ci}", list(prompt), SamplingParams(), StopConditions(max_tokens=64),
                                      choice_index=ci, priority=priority))
            states.append(ChoiceState(len(states), TOK, stops=list(stops), prompt_tail=prompt[-5:]))
    return Generation(pool, reqs, states, sum(len(p) for p in prompts), metrics=metrics, model=MODEL,
                      admission=admission)


def out(text: str = "", finish: str | None = None, cached: int | None = None) -> EngineOutput:
    return EngineOutput(TOK.encode(text) if text else [], finish_reason=finish, cached_tokens=cached)


def sample(metrics: FrontendMetrics, name: str) -> float:
    v = metrics.registry.get_sample_value(name, {"model": MODEL})
    return 0.0 if v is None else v


async def pull(it: AsyncIterator[Step], pool: FakePool, rid: str, item: EngineOutput | BaseException) -> Step:
    """Feed one engine output to one request and take the Step it becomes."""
    pool.feed(rid).put_nowait(item)
    return await it.__anext__()


# --- fan-out ------------------------------------------------------------------------------------------
async def test_choices_interleave_as_outputs_arrive_and_each_ends_with_its_finish() -> None:
    pool = FakePool()
    gen = make_generation(pool, n=3)
    it = gen.steps().__aiter__()
    script = [
        ("req-0-2", out("Hello"), 2), ("req-0-0", out("One"), 0), ("req-0-1", out("Alpha"), 1),
        ("req-0-2", out(" world", finish="stop"), 2),  # choice 2 ends first; the others go on
        ("req-0-0", out(" two"), 0), ("req-0-1", out(" beta"), 1), ("req-0-0", out(" three", finish="length"), 0),
        ("req-0-1", out(), 1),  # a keep-alive is a step, not an end
        ("req-0-1", out(" gamma", finish="stop"), 1),
    ]
    texts = {0: "", 1: "", 2: ""}
    finishes: dict[int, list[str]] = {0: [], 1: [], 2: []}
    for rid, item, index in script:
        step = await pull(it, pool, rid, item)
        assert step.index == index
        assert not finishes[index], "no step of a choice after its finish step"
        texts[index] += step.content
        if step.finish_reason is not None:
            finishes[index].append(step.finish_reason)
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()
    assert texts == {0: "One two three", 1: "Alpha beta gamma", 2: "Hello world"}
    assert finishes == {0: ["length"], 1: ["stop"], 2: ["stop"]}
    # every engine stream has ended (the engine's own return, or closed right after its final output)
    assert sorted(pool.ended) == ["req-0-0", "req-0-1", "req-0-2"]
    assert set(pool.ended.values()) <= {"finished", "closed"}
    assert [s.finish_reason for s in gen.states] == ["length", "stop", "stop"]


@pytest.mark.parametrize("n", [1, 2])
async def test_keep_alive_does_not_end_a_choice(n: int) -> None:
    pool = FakePool()
    gen = make_generation(pool, n=n)
    it = gen.steps().__aiter__()
    for rid in (f"req-0-{i}" for i in range(n)):
        step = await pull(it, pool, rid, out())
        assert (step.content, step.finish_reason, step.num_tokens) == ("", None, 0)
    for i in range(n):
        step = await pull(it, pool, f"req-0-{i}", out("done", finish="stop"))
        assert (step.index, step.content, step.finish_reason) == (i, "done", "stop")
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()


@pytest.mark.parametrize("n", [1, 3])
async def test_a_stop_string_ends_its_choice_and_closes_its_engine_stream(n: int) -> None:
    pool = FakePool()
    gen = make_generation(pool, n=n, stops=["STOP"])
    it = gen.steps().__aiter__()
    step = await pull(it, pool, "req-0-0", out("one STOP two"))
    assert (step.index, step.content, step.finish_reason) == (0, "one ", "stop")
    for i in range(1, n):  # the other choices are unaffected
        step = await pull(it, pool, f"req-0-{i}", out("fine", finish="length"))
        assert (step.index, step.content, step.finish_reason) == (i, "fine", "length")
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()
    assert pool.ended["req-0-0"] == "closed"  # the engine did not finish it; the frontend stopped pulling
    assert gen.states[0].stop_reason == "STOP"


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("exc", [EngineError("instance 0 failed: boom"), ApiError(503, "no ready instance"),
                                 RuntimeError("bug")], ids=["engine", "api", "other"])
async def test_an_error_in_one_choice_cancels_the_others_and_propagates(n: int, exc: Exception) -> None:
    pool = FakePool()
    gen = make_generation(pool, n=n)
    it = gen.steps().__aiter__()
    for i in range(n):
        await pull(it, pool, f"req-0-{i}", out("partial"))
    bad = f"req-0-{n - 1}"
    pool.feed(bad).put_nowait(exc)
    with pytest.raises(type(exc)) as e:
        await it.__anext__()
    assert e.value is exc
    assert pool.ended[bad] == "raised"
    # by the time the error reaches the consumer, every other engine stream has been stopped
    assert {rid: how for rid, how in pool.ended.items() if rid != bad} == {
        f"req-0-{i}": "cancelled" for i in range(n - 1)}
    with pytest.raises(StopAsyncIteration):
        await it.__anext__()


async def test_an_error_after_another_choice_finished_still_propagates() -> None:
    pool = FakePool()
    gen = make_generation(pool, n=2)
    it = gen.steps().__aiter__()
    step = await pull(it, pool, "req-0-0", out("ok", finish="stop"))
    assert step.finish_reason == "stop"
    pool.feed("req-0-1").put_nowait(EngineError("late failure"))
    with pytest.raises(EngineError, match="late failure"):
        await it.__anext__()


@pytest.mark.parametrize("n", [1, 3])
async def test_consumer_stopping_early_stops_every_engine_stream(n: int) -> None:
    pool = FakePool()
    gen = make_generation(pool, n=n)
    it = gen.steps()
    for i in range(n):
        await pull(it, pool, f"req-0-{i}", out("x"))
    await it.aclose()
    assert sorted(pool.ended) == [f"req-0-{i}" for i in range(n)]
    assert set(pool.ended.values()) <= {"cancelled", "closed"}


# --- usage -------------------------------------------------------------------------------------------
async def test_usage_counts_every_choice_and_the_cache_hit_once() -> None:
    pool = FakePool()
    gen = make_generation(pool, n=2)
    assert gen.usage() == {"prompt_tokens": len(PROMPT), "completion_tokens": 0, "total_tokens": len(PROMPT),
                           "prompt_tokens_details": {"cached_tokens": 0}}
    it = gen.steps().__aiter__()
    a, b = TOK.encode("Hello world"), TOK.encode("Bonjour le monde entier")
    await pull(it, pool, "req-0-0", EngineOutput(a[:1], cached_tokens=16))
    await pull(it, pool, "req-0-1", EngineOutput(b[:2], cached_tokens=16))
    await pull(it, pool, "req-0-0", EngineOutput(a[1:], finish_reason="stop"))
    await pull(it, pool, "req-0-1", EngineOutput(b[2:], finish_reason="length"))
    completion = len(a) + len(b)
    assert gen.usage() == {"prompt_tokens": len(PROMPT), "completion_tokens": completion,
                           "total_tokens": len(PROMPT) + completion,
                           "prompt_tokens_details": {"cached_tokens": 16}}  # one prompt: its hit counts once


async def test_usage_sums_the_cache_hits_of_distinct_prompts() -> None:
    pool = FakePool()
    p0, p1 = PROMPT, TOK.encode("a different prompt, also long enough to be cached in part")
    gen = make_generation(pool, n=1, prompts=[p0, p1])
    it = gen.steps().__aiter__()
    await pull(it, pool, "req-0-0", EngineOutput(TOK.encode("x"), finish_reason="stop", cached_tokens=16))
    await pull(it, pool, "req-1-0", EngineOutput(TOK.encode("y"), finish_reason="stop", cached_tokens=8))
    usage = gen.usage()
    assert usage["prompt_tokens"] == len(p0) + len(p1)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 16 + 8


# --- admission -------------------------------------------------------------------------------------
async def serve(gen: Generation, steps: list[Step], first_step: asyncio.Event | None = None) -> None:
    """What a handler does: admit, stream, and finish whatever happens."""
    try:
        await gen.admit()
        async for step in gen.steps():
            steps.append(step)
            if first_step is not None:
                first_step.set()
    finally:
        gen.finish()


async def test_admit_takes_one_slot_per_queue_and_finish_releases_them_once() -> None:
    model_q, server_q = AdmissionQueue(4, name="model"), AdmissionQueue(4, name="server")
    await server_q.acquire()  # another request's slot: a double release would free it
    metrics = FrontendMetrics()
    pool = FakePool()
    gen = make_generation(pool, admission=(model_q, server_q), metrics=metrics)
    await gen.admit()
    assert (model_q.active, server_q.active) == (1, 2)
    assert pool.preflights == 1
    it = gen.steps().__aiter__()
    await pull(it, pool, "req-0-0", out("hi", finish="stop"))
    gen.finish()
    assert (model_q.active, server_q.active) == (0, 1)
    gen.finish()
    gen.finish()
    assert (model_q.active, server_q.active) == (0, 1)
    assert sample(metrics, "dynamo_frontend_request_duration_seconds_count") == 1


async def test_preflight_refusal_takes_no_slot() -> None:
    q = AdmissionQueue(1, max_queue=0)
    pool = FakePool(refuse=ApiError(503, "no ready instance of model 'm'", code="no_instance"))
    gen = make_generation(pool, admission=(q,))
    with pytest.raises(ApiError) as e:
        await gen.admit()
    assert e.value.status == 503
    assert q.active == 0
    gen.finish()
    assert q.active == 0
    assert pool.started == []


async def test_refused_by_the_first_queue_holds_nothing() -> None:
    model_q, server_q = AdmissionQueue(1, max_queue=0), AdmissionQueue(4)
    await model_q.acquire()  # the model is full
    gen = make_generation(FakePool(), admission=(model_q, server_q))
    with pytest.raises(ServingError) as e:
        await gen.admit()
    assert to_api_error(e.value).status == 429 and "Retry-After" in to_api_error(e.value).headers
    gen.finish()
    assert (model_q.active, server_q.active) == (1, 0)  # the other holder's slot is intact


async def test_refused_by_the_second_queue_gives_back_the_first() -> None:
    model_q, server_q = AdmissionQueue(4), AdmissionQueue(1, max_queue=0)
    await server_q.acquire()  # the server is full
    metrics = FrontendMetrics()
    gen = make_generation(FakePool(), admission=(model_q, server_q), metrics=metrics)
    with pytest.raises(ServingError) as e:
        await gen.admit()
    assert to_api_error(e.value).status == 429
    gen.finish()
    gen.finish()
    assert (model_q.active, server_q.active) == (0, 1)
    assert sample(metrics, "dynamo_frontend_queued_requests") == 0


async def test_cancelled_while_queued_holds_nothing_and_is_never_granted() -> None:
    model_q, server_q = AdmissionQueue(4), AdmissionQueue(1)
    await server_q.acquire()
    metrics = FrontendMetrics()
    pool = FakePool()
    gen = make_generation(pool, admission=(model_q, server_q), metrics=metrics)
    task = asyncio.create_task(serve(gen, []))
    await settle(lambda: server_q.waiting == 1, "queued at the server queue")
    assert model_q.active == 1
    assert sample(metrics, "dynamo_frontend_queued_requests") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (model_q.active, server_q.active, server_q.waiting) == (0, 1, 0)
    assert sample(metrics, "dynamo_frontend_queued_requests") == 0
    server_q.release()  # must not be handed to the cancelled request
    assert server_q.active == 0
    assert pool.started == []


async def test_queued_request_runs_when_a_slot_frees() -> None:
    q = AdmissionQueue(1)
    await q.acquire()
    metrics = FrontendMetrics()
    pool = FakePool()
    gen = make_generation(pool, admission=(q,), metrics=metrics, priority=3)
    steps: list[Step] = []
    task = asyncio.create_task(serve(gen, steps))
    await settle(lambda: q.waiting == 1, "queued")
    await turns()
    assert pool.started == [] and sample(metrics, "dynamo_frontend_queued_requests") == 1
    q.release()
    await settle(lambda: pool.started == ["req-0-0"], "dispatched after the grant")
    assert sample(metrics, "dynamo_frontend_queued_requests") == 0 and q.active == 1
    pool.feed("req-0-0").put_nowait(out("hello", finish="stop"))
    await task
    assert [s.content for s in steps] == ["hello"] and q.active == 0


@pytest.mark.parametrize("n", [1, 3])
async def test_consumer_cancelled_mid_stream_releases_slots_and_stops_engines_once(n: int) -> None:
    model_q, server_q = AdmissionQueue(2), AdmissionQueue(2)
    metrics = FrontendMetrics()
    pool = FakePool()
    gen = make_generation(pool, n=n, admission=(model_q, server_q), metrics=metrics)
    steps: list[Step] = []
    first = asyncio.Event()
    task = asyncio.create_task(serve(gen, steps, first))
    await settle(lambda: len(pool.started) == n, "engine streams started")
    pool.feed("req-0-0").put_nowait(out("Hello"))
    await first.wait()
    assert (model_q.active, server_q.active) == (1, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (model_q.active, server_q.active) == (0, 0)
    assert sorted(pool.ended) == sorted(pool.started) and set(pool.ended.values()) <= {"cancelled", "closed"}
    gen.finish()  # a late second finish changes nothing
    assert (model_q.active, server_q.active) == (0, 0)
    assert sample(metrics, "dynamo_frontend_request_duration_seconds_count") == 1
    assert sample(metrics, "dynamo_frontend_output_tokens_total") == len(TOK.encode("Hello"))


# --- metrics ----------------------------------------------------------------------------------------
async def test_metrics_are_observed_once_with_the_request_sizes() -> None:
    metrics = FrontendMetrics()
    pool = FakePool()
    gen = make_generation(pool, n=2, metrics=metrics)
    it = gen.steps().__aiter__()
    a, b = TOK.encode("one two three"), TOK.encode("four")
    await pull(it, pool, "req-0-0", EngineOutput(a, finish_reason="stop", cached_tokens=4))
    await pull(it, pool, "req-0-1", EngineOutput(b, finish_reason="stop", cached_tokens=4))
    gen.finish()
    gen.finish()
    assert sample(metrics, "dynamo_frontend_request_duration_seconds_count") == 1
    assert sample(metrics, "dynamo_frontend_input_sequence_tokens_count") == 1
    assert sample(metrics, "dynamo_frontend_input_sequence_tokens_sum") == len(PROMPT)
    assert sample(metrics, "dynamo_frontend_output_sequence_tokens_sum") == len(a) + len(b)
    assert sample(metrics, "dynamo_frontend_output_tokens_total") == len(a) + len(b)
    assert sample(metrics, "dynamo_frontend_cached_tokens_sum") == 4
    assert sample(metrics, "dynamo_frontend_time_to_first_token_seconds_count") == 1
    assert sample(metrics, "dynamo_frontend_inter_token_latency_seconds_count") == 1


async def test_no_first_token_means_no_ttft_sample() -> None:
    metrics = FrontendMetrics()
    pool = FakePool()
    gen = make_generation(pool, metrics=metrics)
    it = gen.steps().__aiter__()
    await pull(it, pool, "req-0-0", out(finish="stop"))  # ended without a token (e.g. EOS first)
    gen.finish()
    assert sample(metrics, "dynamo_frontend_request_duration_seconds_count") == 1
    assert sample(metrics, "dynamo_frontend_time_to_first_token_seconds_count") == 0
    assert sample(metrics, "dynamo_frontend_output_sequence_tokens_sum") == 0
