"""The kit's cases: every function here runs once per KitTarget, through one real server per target (fixture `kit`).

A module that runs the kit imports these functions and defines the `kit` fixture with `kit_fixture(targets)`
(conformance/test_engine_kit.py does; so does `python -m dynamo_mono.testing`). Cases needing a capability the
target does not claim are skipped, naming it.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Iterator

import pytest

from dynamo_mono.testing.engine_kit import HANG_GUARD_S, KitClient, KitTarget, wait_until
from dynamo_mono.testing.server import metric_value, start


def kit_fixture(targets: Iterable[KitTarget], marks: dict[str, list[Any]] | None = None) -> Any:
    """A module-scoped `kit` fixture parametrised over targets: one server per target, started once, stopped at
    the end of the module. marks: extra pytest marks per target name (e.g. {"vllm": [pytest.mark.vllm]})."""
    params = [pytest.param(t, id=t.name, marks=(marks or {}).get(t.name, [])) for t in targets]

    @pytest.fixture(scope="module", params=params)
    def kit(request: pytest.FixtureRequest) -> Iterator[KitClient]:
        yield from serve_target(request.param)

    return kit


def serve_target(target: KitTarget) -> Iterator[KitClient]:
    """Start the target's server (skip when its modules are missing), yield its client, stop it."""
    missing = target.missing()
    if missing:
        pytest.skip(f"{target.name}: {target.skip_reason or 'missing ' + ', '.join(missing)}")
    extra = target.prepare() if target.prepare is not None else []
    server = start(["--router-mode", "kv", *target.serve_args, *extra], env=dict(target.env),
                   pythonpath=list(target.pythonpath), timeout=target.start_timeout)
    try:
        yield KitClient(target, server)
    finally:
        server.stop()


def _need(kit: KitClient, capability: str) -> None:
    if capability not in kit.target.capabilities:
        pytest.skip(f"{kit.target.name} does not claim {capability!r}")


def _words(seed: int, n: int) -> str:
    """n distinct words; different seeds share no word (so prompts share no prefix beyond the chat template)."""
    return " ".join(f"w{seed}x{i}" for i in range(n))


def _greedy(**extra: Any) -> dict[str, Any]:
    return {"temperature": 0, "seed": 7, **extra}


# --- generation ------------------------------------------------------------------------------------
def test_streaming_chat(kit: KitClient) -> None:
    s = kit.open_stream("/v1/chat/completions", kit.chat("Say something.", max_tokens=12, ignore_eos=True,
                                                         stream_options={"include_usage": True}))
    text, finish, usage = "", None, None
    for ev in s:
        for ch in ev.get("choices") or ():
            text += (ch.get("delta") or {}).get("content") or ""
            finish = ch.get("finish_reason") or finish
        usage = ev.get("usage") or usage
    assert text, s.events
    assert finish == "length"
    assert usage["completion_tokens"] == 12 and usage["prompt_tokens"] > 0


def test_unary_completion(kit: KitClient) -> None:
    status, body = kit.post("/v1/completions", kit.completion("Once upon a time", max_tokens=9, ignore_eos=True))
    assert status == 200, body
    (choice,) = body["choices"]
    assert choice["text"] and choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 9


def test_unary_chat_cached_tokens_reported(kit: KitClient) -> None:
    status, body = kit.post("/v1/chat/completions", kit.chat("hello there", max_tokens=3, ignore_eos=True))
    assert status == 200, body
    usage = body["usage"]
    assert usage["completion_tokens"] == 3
    assert 0 <= (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0) <= usage["prompt_tokens"]


def test_max_tokens_finishes_with_length(kit: KitClient) -> None:
    s = kit.open_stream("/v1/completions", kit.completion("count with me", max_tokens=7, ignore_eos=True,
                                                          stream_options={"include_usage": True}))
    n_text, finish, usage = 0, None, None
    for ev in s:
        for ch in ev.get("choices") or ():
            n_text += bool(ch.get("text"))
            finish = ch.get("finish_reason") or finish
        usage = ev.get("usage") or usage
    assert finish == "length" and usage["completion_tokens"] == 7 and n_text >= 1


def test_n_choices(kit: KitClient) -> None:
    _need(kit, "n")
    status, body = kit.post("/v1/completions", kit.completion("pick one", n=3, max_tokens=4, ignore_eos=True))
    assert status == 200, body
    assert sorted(c["index"] for c in body["choices"]) == [0, 1, 2]
    assert all(c["finish_reason"] == "length" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 12
    s = kit.open_stream("/v1/chat/completions", kit.chat("two please", n=2, max_tokens=5, ignore_eos=True))
    finished = {ch["index"]: ch["finish_reason"] for ev in s for ch in ev.get("choices") or () if ch.get("finish_reason")}
    assert finished == {0: "length", 1: "length"}


def test_stop_token_ids_end_generation(kit: KitClient) -> None:
    # Every token id is a stop token: the first sampled token ends the request, and is not returned.
    status, body = kit.post("/v1/completions", kit.completion(
        "stop at once", max_tokens=20, stop_token_ids=list(range(kit.target.vocab_size))))
    assert status == 200, body
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "stop", choice
    assert body["usage"]["completion_tokens"] == 0 and choice["text"] == ""


def test_stop_string_truncates(kit: KitClient) -> None:
    prompt = "the quick brown fox"
    status, body = kit.post("/v1/completions", kit.completion(prompt, max_tokens=24, ignore_eos=True, **_greedy()))
    assert status == 200, body
    full = body["choices"][0]["text"]
    if len(full) < 8:
        pytest.fail(f"greedy output too short to cut with a stop string: {full!r}")
    stop = full[len(full) // 2:len(full) // 2 + 3]
    status, body = kit.post("/v1/completions", kit.completion(prompt, max_tokens=24, ignore_eos=True, stop=[stop],
                                                              **_greedy()))
    assert status == 200, body
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == full[:full.find(stop)]


def test_logprobs(kit: KitClient) -> None:
    _need(kit, "logprobs")
    status, body = kit.post("/v1/completions", kit.completion("log me", max_tokens=5, ignore_eos=True, logprobs=2))
    assert status == 200, body
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 5 and len(lp["token_logprobs"]) == 5
    assert all(v <= 0.0 for v in lp["token_logprobs"])
    assert all(1 <= len(top) <= 2 for top in lp["top_logprobs"])
    s = kit.open_stream("/v1/chat/completions", kit.chat("log me too", max_tokens=4, ignore_eos=True, logprobs=True,
                                                         top_logprobs=2))
    content = [c for ev in s for ch in ev.get("choices") or () for c in ((ch.get("logprobs") or {}).get("content") or ())]
    assert len(content) == 4
    assert all(c["logprob"] <= 0.0 and 1 <= len(c["top_logprobs"]) <= 2 for c in content)


# --- request lifecycle -----------------------------------------------------------------------------
def test_abort_on_disconnect_frees_the_engine_request(kit: KitClient) -> None:
    kit.wait_idle()
    n = kit.target.max_tokens_long
    before = kit.metric("dynamo_frontend_output_sequence_tokens_sum")
    s = kit.open_stream("/v1/chat/completions", kit.chat("go on forever", max_tokens=n, ignore_eos=True))
    it = iter(s)
    next(it)
    kit.wait_metric("dynamo_engine_running_requests", lambda v: v == 1)
    # Load metrics see the running request's blocks (an engine may report them a step after the request count).
    kit.wait_metric("dynamo_engine_kv_active_blocks", lambda v: v > 0)
    s.close()
    text = kit.wait_idle()  # the engine dropped it: nothing running, no KV blocks held
    assert metric_value(text, "dynamo_frontend_disconnected_clients") >= 1
    assert metric_value(text, "dynamo_frontend_output_sequence_tokens_sum") - before < n  # aborted, not finished


def _ranks(text: str) -> set[str]:
    """The dp ranks /metrics reports engine load for."""
    return {line.split('dp_rank="', 1)[1].split('"', 1)[0] for line in text.splitlines()
            if line.startswith("dynamo_engine_running_requests{")}


def _rank_count(kit: KitClient) -> int:
    return max(1, len(_ranks(kit.metrics())))


def test_load_metrics_per_dp_rank(kit: KitClient) -> None:
    text = kit.wait_idle()
    ranks = _ranks(text)
    expect = 2 if "dp_rank" in kit.target.capabilities else 1
    assert len(ranks) >= expect, ranks
    assert metric_value(text, "dynamo_frontend_model_total_kv_blocks") > 0


def test_dp_rank_pin_runs_on_that_rank(kit: KitClient) -> None:
    _need(kit, "dp_rank")
    for rank in (1, 0):
        kit.wait_idle()
        s = kit.open_stream("/v1/chat/completions", kit.chat(
            f"pinned to {rank}", max_tokens=kit.target.max_tokens_long, ignore_eos=True, nvext={"dp_rank": rank}))
        next(iter(s))
        kit.wait_metric("dynamo_engine_running_requests", lambda v: v == 1, {"dp_rank": str(rank)})
        assert kit.metric("dynamo_engine_running_requests", {"dp_rank": str(1 - rank)}) == 0
        s.close()
    kit.wait_idle()


def test_priority_is_accepted(kit: KitClient) -> None:
    _need(kit, "priority")
    for prio in (-5, 5):
        status, body = kit.post("/v1/chat/completions", kit.chat(
            "urgent?", max_tokens=3, ignore_eos=True, nvext={"agent_hints": {"priority": prio}}))
        assert status == 200, body
        assert body["usage"]["completion_tokens"] == 3


def test_priority_orders_the_queue(kit: KitClient) -> None:
    """One slot busy; a less urgent request queues first, a more urgent one second: the urgent one is served first
    (API convention: lower = more urgent; the server converts it to the engine's)."""
    _need(kit, "priority")
    if not kit.target.serial:
        pytest.skip(f"{kit.target.name} is not run with one request at a time (KitTarget.serial)")
    pin = {"dp_rank": 0} if "dp_rank" in kit.target.capabilities else {}
    kit.wait_idle()
    blocker = kit.open_stream("/v1/chat/completions", kit.chat(
        "block the slot", max_tokens=kit.target.max_tokens_long, ignore_eos=True, nvext=dict(pin)))
    next(iter(blocker))
    kit.wait_metric("dynamo_engine_running_requests", lambda v: v == 1)
    order: list[str] = []
    lock = threading.Lock()

    def send(name: str, prio: int) -> None:
        status, body = kit.post("/v1/chat/completions", kit.chat(
            f"{name} priority", max_tokens=4, ignore_eos=True, nvext={**pin, "agent_hints": {"priority": prio}}))
        assert status == 200, body
        with lock:
            order.append(name)

    low = threading.Thread(target=send, args=("low", 5))
    high = threading.Thread(target=send, args=("high", -5))
    try:
        low.start()
        kit.wait_metric("dynamo_frontend_inflight_requests", lambda v: v == 2)
        wait_until(lambda: kit.metric("dynamo_engine_waiting_requests") + kit.metric(
            "dynamo_frontend_queued_requests") >= 1, "the less urgent request to queue")
        high.start()
        # both queued behind the blocker (or, where the engine preempts for priority, the urgent one already ran)
        wait_until(lambda: order or kit.metric("dynamo_engine_waiting_requests") + kit.metric(
            "dynamo_frontend_queued_requests") >= 2, "the urgent request to queue")
    finally:
        blocker.close()
        low.join(HANG_GUARD_S)
        high.join(HANG_GUARD_S)
    assert order == ["high", "low"], order
    kit.wait_idle()


def test_health_after_engine_fault(kit: KitClient) -> None:
    _need(kit, "fault")
    body = {**kit.completion("fail me", max_tokens=8, ignore_eos=True), **(kit.target.fault_body or {})}
    status, out = kit.post("/v1/completions", body)
    failed = status >= 400 or any(c.get("finish_reason") == "error" for c in out.get("choices", ()))
    assert failed, (status, out)
    if status >= 400:
        assert "error" in out and out["error"].get("message"), out
    wait_until(lambda: kit.get("/health") is not None, "/health")
    status, out = kit.post("/v1/completions", kit.completion("and now fine", max_tokens=4, ignore_eos=True))
    assert status == 200 and out["usage"]["completion_tokens"] == 4, out
    kit.wait_idle()


# --- KV events -------------------------------------------------------------------------------------
def _indexed(kit: KitClient) -> float:
    return kit.metric("dynamo_component_router_kv_indexed_blocks")


def test_kv_stored_blocks_are_hit(kit: KitClient) -> None:
    _need(kit, "kv_events")
    bs = kit.target.block_size
    prompt = _words(101, 12 * bs // 4)
    status, first = kit.post("/v1/chat/completions", kit.chat(prompt, max_tokens=1, ignore_eos=True))
    assert status == 200, first
    blocks = first["usage"]["prompt_tokens"] // bs
    assert blocks >= 3
    # the engine's KV events reach the router's index: at least the prompt's full blocks are indexed
    kit.wait_metric("dynamo_component_router_kv_indexed_blocks", lambda v: v >= blocks)
    hits_before = kit.metric("dynamo_component_router_kv_hit_rate_sum")
    status, second = kit.post("/v1/chat/completions", kit.chat(prompt, max_tokens=1, ignore_eos=True))
    assert status == 200, second
    cached = (second["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert cached >= bs, second["usage"]  # the engine's own cache served the stored blocks
    assert kit.metric("dynamo_component_router_kv_hit_rate_sum") > hits_before  # and the router predicted it


def test_kv_evictions_are_announced(kit: KitClient) -> None:
    _need(kit, "kv_events")
    kit.wait_idle()
    total = kit.metric("dynamo_frontend_model_total_kv_blocks")  # all dp ranks
    bs = kit.target.block_size
    want = int(min(total / _rank_count(kit) * bs / 4, 1000))  # prompt tokens per request: a quarter of a rank's cache
    n_words = max(8, want // 10)
    stored, seed = 0, 1000
    while stored <= 2 * total and seed < 1100:
        seed += 1
        status, out = kit.post("/v1/chat/completions", kit.chat(_words(seed, n_words), max_tokens=1, ignore_eos=True))
        assert status == 200, out
        got = out["usage"]["prompt_tokens"]
        stored += got // bs
        n_words = max(8, int(n_words * want / got))  # the tokenizer's tokens per word, measured
    assert stored > 2 * total, (stored, total)
    # Without BlockRemoved events the index would hold every block ever stored (> 2x the cache).
    kit.wait_metric("dynamo_component_router_kv_indexed_blocks", lambda v: 0 < v <= total)
