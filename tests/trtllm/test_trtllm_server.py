"""`dynamo-mono serve --engine trtllm` end to end on the fake tensorrt_llm: a real server subprocess, real HTTP
clients; streaming and unary chat, n > 1, EOS stop, max_tokens, logprobs, cancel freeing the request in the
engine, and KV events indexed by the router so a repeated prompt is served from cache."""

from __future__ import annotations

import time
import urllib.request

import httpx
import pytest

from conformance.server import metric_value, start_server
from dynamo_mono.api import TINY_CHATML_DIR
from tests.trtllm.conftest import server_env

pytestmark = pytest.mark.timeout(180)

BS = 16
# Simulated time runs at half speed of the default perf model (8 ms a decode step / 2): a request of thousands of
# tokens takes many seconds of wall time whatever the machine, so a cancelled one cannot have finished by itself.
SPEEDUP = 2.0
ARGS = ["--engine", "trtllm", "--model", TINY_CHATML_DIR, "--tokens-per-block", str(BS), "--router-mode", "kv",
        "--kv-cache-max-tokens", "65536", "--max-batch-size", "64"]


@pytest.fixture(scope="module")
def server():
    srv = start_server(ARGS, env=server_env(SPEEDUP), timeout=90)
    try:
        yield srv
    finally:
        srv.stop()


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def _wait(cond, what: str, guard_s: float = 30.0):
    """Poll a state until it holds; the deadline only guards against a hang."""
    deadline = time.monotonic() + guard_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _client(url: str):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=60, max_retries=0)


def _msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_unary_chat_max_tokens_and_logprobs(server) -> None:
    r = _client(server.url).chat.completions.create(model="tiny-chatml", messages=_msgs("unary please"),
                                                     max_tokens=7, logprobs=True, top_logprobs=2,
                                                     extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 7
    lps = r.choices[0].logprobs.content
    assert len(lps) == 7 and all(len(t.top_logprobs) == 2 for t in lps)


def test_streaming_chat_ends_with_eos_stop(server) -> None:
    stream = _client(server.url).chat.completions.create(model="tiny-chatml", messages=_msgs("stream a story"),
                                                          max_tokens=1000, stream=True,
                                                          stream_options={"include_usage": True})
    chunks = list(stream)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]  # the fake model's EOS comes within 256 tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text and 0 < usage.completion_tokens < 1000


def test_n_choices(server) -> None:
    r = _client(server.url).chat.completions.create(model="tiny-chatml", messages=_msgs("two of them"), n=2,
                                                     max_tokens=5, temperature=1.0, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert all(c.finish_reason == "length" for c in r.choices) and r.usage.completion_tokens == 10


def test_repeated_prompt_is_served_from_cache_through_kv_events(server) -> None:
    prompt = "a long shared prefix " * 20
    c = _client(server.url)
    first = c.completions.create(model="tiny-chatml", prompt=prompt, max_tokens=2)
    assert first.usage.prompt_tokens_details is None or not first.usage.prompt_tokens_details.cached_tokens
    # the engine's stored blocks reach the router's index through the converted KV events
    _wait(lambda: metric_value(_metrics(server.url), "dynamo_component_router_kv_indexed_blocks")
          >= first.usage.prompt_tokens // BS, "the prompt's blocks in the router's index")
    hits_before = metric_value(_metrics(server.url), "dynamo_component_router_kv_hit_rate_sum")
    second = c.completions.create(model="tiny-chatml", prompt=prompt, max_tokens=2)
    assert second.usage.prompt_tokens_details.cached_tokens == (first.usage.prompt_tokens // BS) * BS
    assert metric_value(_metrics(server.url), "dynamo_component_router_kv_hit_rate_sum") > hits_before


def test_cancel_frees_the_request_in_the_engine(server) -> None:
    def gauge(name: str) -> float:
        return metric_value(_metrics(server.url), name)

    body = {"model": "tiny-chatml", "messages": _msgs("never ending"), "max_tokens": 8000, "ignore_eos": True,
            "stream": True}
    with httpx.Client(timeout=60) as hc:
        with hc.stream("POST", server.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            _wait(lambda: gauge("dynamo_engine_kv_active_blocks") > 0, "the request's KV blocks in use")
            assert gauge("dynamo_engine_running_requests") == 1
        # the client went away mid-stream (8000 tokens at 4 ms each would take 32 s)
    _wait(lambda: gauge("dynamo_engine_running_requests") == 0 and gauge("dynamo_engine_kv_active_blocks") == 0,
          "the cancelled request gone from the engine and its KV blocks freed", guard_s=20.0)
    assert "Traceback" not in server.log()
