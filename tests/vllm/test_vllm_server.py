"""The vLLM engine behind `dynamo-mono serve`: streaming chat, prefix caching, KV routing, abort, structured output."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from tests.vllm.conftest import BLOCK_SIZE

# Starting the shared server (two EngineCore processes) dominates; the tests themselves take seconds.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]


def _client(url: str):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=60, max_retries=0)


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def _series(text: str, name: str) -> dict[str, float]:
    """{label string: value} of one metric family in Prometheus text format."""
    out = {}
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def _routed(url: str) -> dict[str, float]:
    return {re.search(r'worker_id="(\d+)"', k).group(1): v
            for k, v in _series(_metrics(url), "dynamo_component_router_requests_total").items()}


def _wait_until(cond, what: str, guard_s: float = 30.0):
    """Poll a state until it holds; the deadline only guards against a hang (never decides an outcome)."""
    deadline = time.monotonic() + guard_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _indexed_blocks(url: str, worker: str) -> float:
    return sum(v for k, v in _series(_metrics(url), "dynamo_component_router_kv_indexed_blocks").items()
               if f'worker_id="{worker}"' in k)


def _words(seed: int, n: int) -> str:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    return " ".join(f"{words[(seed * 7 + i * 3) % 10]}{(seed * 31 + i) % 97}" for i in range(n))


def test_openai_sdk_streaming_chat(vllm_server):
    client = _client(vllm_server.url)
    stream = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Say something."}], max_tokens=24, stream=True,
        stream_options={"include_usage": True}, temperature=0, extra_body={"ignore_eos": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text, "no content streamed"
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == 24 and usage.prompt_tokens > 5


def test_repeated_prefix_reports_cached_tokens(vllm_server):
    client = _client(vllm_server.url)
    messages = [{"role": "system", "content": _words(1, 120)}, {"role": "user", "content": "first"}]
    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
    messages[-1]["content"] = "second"
    second = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens > 2 * BLOCK_SIZE
    assert cached > 0 and cached % BLOCK_SIZE == 0
    assert cached <= second.usage.prompt_tokens


def test_kv_router_sends_shared_prefix_to_the_instance_holding_it(vllm_server):
    """Two instances: the router's predicted overlap equals the cached tokens vLLM reports."""
    url = vllm_server.url
    client = _client(url)
    prefix = _words(7, 150)
    before = _routed(url)
    first = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": prefix + " one"}],
                                           max_tokens=2, temperature=0)
    mid = _routed(url)
    first_worker = next(w for w, n in mid.items() if n > before.get(w, 0))
    hits_before = _series(_metrics(url), "dynamo_component_router_kv_hit_rate_sum")
    # KV events of the last engine step arrive asynchronously: wait until the router indexed the prompt's blocks
    prompt_blocks = first.usage.prompt_tokens // BLOCK_SIZE
    _wait_until(lambda: _indexed_blocks(url, first_worker) >= prompt_blocks, "the first prompt's blocks indexed")
    for i in range(3):
        resp = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": prefix + f" follow up {i}"}],
            max_tokens=2, temperature=0)
        after = _routed(url)
        second_worker = next(w for w, n in after.items() if n > mid.get(w, 0))
        assert second_worker == first_worker, "shared-prefix request went to the instance without the prefix"
        mid = after
        if i == 0:
            hits_after = _series(_metrics(url), "dynamo_component_router_kv_hit_rate_sum")
            predicted_fraction = sum(hits_after.values()) - sum(hits_before.values())
            prompt_blocks = resp.usage.prompt_tokens // BLOCK_SIZE
            predicted_blocks = round(predicted_fraction * prompt_blocks)
            cached = resp.usage.prompt_tokens_details.cached_tokens
            assert cached > 0
            assert predicted_blocks * BLOCK_SIZE == cached, (predicted_fraction, prompt_blocks, cached)


def test_client_disconnect_aborts_the_vllm_request(vllm_server):
    import http.client

    url = vllm_server.url
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "go on forever"}],
                       "max_tokens": 1900, "ignore_eos": True, "stream": True})
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(5):
        assert resp.fp.readline()
    running = _series(_metrics(url), "dynamo_engine_running_requests")
    assert sum(running.values()) == 1, running
    out_before = sum(_series(_metrics(url), "dynamo_frontend_output_sequence_tokens_sum").values())
    conn.sock.close()
    conn.close()
    _wait_until(lambda: sum(_series(_metrics(url), "dynamo_engine_running_requests").values()) == 0,
                "the engine to drop the request")
    # aborted, not finished: the request ended with far fewer than its 1900 tokens
    out = sum(_series(_metrics(url), "dynamo_frontend_output_sequence_tokens_sum").values()) - out_before
    assert out < 1900, out
    disconnected = _series(_metrics(url), "dynamo_frontend_disconnected_clients")
    assert sum(disconnected.values()) >= 1


def test_json_schema_response_format_is_honoured(vllm_server):
    schema = {"type": "object",
              "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]},
                             "ok": {"type": "boolean"}},
              "required": ["colour", "ok"], "additionalProperties": False}
    client = _client(vllm_server.url)
    resp = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Pick a colour."}], max_tokens=200, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}})
    data = json.loads(resp.choices[0].message.content)
    assert set(data) == {"colour", "ok"}
    assert data["colour"] in ("red", "green", "blue") and isinstance(data["ok"], bool)


def test_parameters_vllm_refuses_are_a_400_not_an_engine_error(vllm_server):
    # A stop token id past the model's vocabulary passes our checks (the server does not know the embedding rows)
    # and vLLM refuses it: the client's mistake, so a 400 in the OpenAI envelope, and the server keeps serving.
    import openai

    client = _client(vllm_server.url)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="hello", max_tokens=4, extra_body={"stop_token_ids": [10**6]})
    assert err.value.status_code == 400 and "vllm" in err.value.message
    ok = client.completions.create(model="tiny", prompt="hello", max_tokens=2)
    assert ok.choices[0].finish_reason in ("length", "stop")
