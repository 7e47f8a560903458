"""POST /v1/messages with stream=true, read as raw SSE: exact event order for each block transition."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from dynamo_mono.http import generate
from dynamo_mono.http.anthropic_routes import thinking_signature
from conformance.waits import wait_until
from tests.anthropic.conftest import TIME_TOOL, WEATHER_TOOL, body, parse_sse

pytestmark = pytest.mark.timeout(10)


async def stream(client: Any, payload: dict) -> list[tuple[str, dict]]:
    r = await client.post("/v1/messages", json={**payload, "stream": True})
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"].startswith("text/event-stream")
    raw = await r.text()
    assert "[DONE]" not in raw
    events = parse_sse(raw)
    for name, data in events:
        assert data["type"] == name
    return events


def block_events(events: list[tuple[str, dict]]) -> list[str]:
    """The content events only, as 'start:kind', 'delta:kind', 'stop' (consecutive deltas merged)."""
    out: list[str] = []
    for name, data in events:
        if name == "content_block_start":
            out.append("start:" + data["content_block"]["type"])
        elif name == "content_block_delta":
            tag = "delta:" + data["delta"]["type"]
            if not out or out[-1] != tag:
                out.append(tag)
        elif name == "content_block_stop":
            out.append("stop")
    return out


def assemble(events: list[tuple[str, dict]]) -> list[dict]:
    """Rebuild the content blocks the way a client does, checking indexes open and close in order."""
    blocks: list[dict] = []
    open_index = None
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append(dict(data["content_block"], _json=""))
        elif name == "content_block_delta":
            assert data["index"] == open_index
            b, d = blocks[open_index], data["delta"]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] = d["signature"]
            elif d["type"] == "input_json_delta":
                b["_json"] += d["partial_json"]
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    for b in blocks:
        raw = b.pop("_json")
        if b["type"] == "tool_use":
            b["input"] = json.loads(raw) if raw else {}
    return blocks


def envelope(events: list[tuple[str, dict]]) -> list[str]:
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    return names


async def test_text_stream_event_order(client: Any) -> None:
    events = await stream(client, body("Hello"))
    envelope(events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["role"] == "assistant" and start["id"].startswith("msg_")
    assert start["usage"]["input_tokens"] > 0 and start["usage"]["output_tokens"] == 0
    assert block_events(events) == ["start:text", "delta:text_delta", "stop"]
    assert assemble(events) == [{"type": "text", "text": "Hello! How can I help you today?"}]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] > 0


async def test_thinking_then_text_stream(client: Any) -> None:
    events = await stream(client, body("THINK_THEN_TEXT"))
    envelope(events)
    assert block_events(events) == ["start:thinking", "delta:thinking_delta", "delta:signature_delta", "stop",
                                    "start:text", "delta:text_delta", "stop"]
    sig_events = [d for n, d in events if n == "content_block_delta" and d["delta"]["type"] == "signature_delta"]
    assert len(sig_events) == 1
    assert assemble(events) == [
        {"type": "thinking", "thinking": "Two plus two is four.", "signature": thinking_signature("Two plus two is four.")},
        {"type": "text", "text": "The answer is 4."}]


async def test_text_then_tool_use_stream(client: Any) -> None:
    events = await stream(client, body("TEXT_THEN_TOOL", tools=[WEATHER_TOOL]))
    envelope(events)
    assert block_events(events) == ["start:text", "delta:text_delta", "stop",
                                    "start:tool_use", "delta:input_json_delta", "stop"]
    start_tool = next(d for n, d in events if n == "content_block_start" and d["index"] == 1)["content_block"]
    assert start_tool["input"] == {} and start_tool["id"].startswith("toolu_") and start_tool["name"] == "get_weather"
    blocks = assemble(events)
    assert blocks[1]["input"] == {"city": "Paris", "days": 2}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_thinking_whitespace_tool_stream_has_no_text_block(client: Any) -> None:
    events = await stream(client, body("THINK_WS_TOOL", tools=[WEATHER_TOOL]))
    assert block_events(events) == ["start:thinking", "delta:thinking_delta", "delta:signature_delta", "stop",
                                    "start:tool_use", "delta:input_json_delta", "stop"]


async def test_two_tools_stream(client: Any) -> None:
    events = await stream(client, body("TWO_TOOLS", tools=[WEATHER_TOOL, TIME_TOOL]))
    blocks = assemble(events)
    assert [(b["name"], b["input"]) for b in blocks] == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]


@pytest.mark.parametrize("prompt, extra", [
    ("Hello", {}), ("THINK_THEN_TEXT", {}), ("TEXT_THEN_TOOL", {"tools": [WEATHER_TOOL]}),
    ("STOP_SEQ", {"stop_sequences": ["STOP"]}), ("Hello", {"max_tokens": 3}),
])
async def test_stream_matches_unary(client: Any, prompt: str, extra: dict) -> None:
    payload = body(prompt, **extra)
    unary = await (await client.post("/v1/messages", json=payload)).json()
    events = await stream(client, payload)
    streamed = assemble(events)
    for a, b in zip(streamed, unary["content"]):
        if a["type"] == "tool_use":
            a["id"] = b["id"] = "same"
    assert streamed == unary["content"]
    final = events[-2][1]
    assert final["delta"] == {"stop_reason": unary["stop_reason"], "stop_sequence": unary["stop_sequence"]}
    assert final["usage"]["output_tokens"] == unary["usage"]["output_tokens"]


async def test_error_after_start_is_error_event(make_client: Any) -> None:
    client = await make_client(mocker_fail_after=2)
    r = await client.post("/v1/messages", json=body("Hello", stream=True))
    assert r.status == 200
    events = parse_sse(await r.text())
    assert events[0][0] == "message_start"
    name, data = events[-1]
    assert name == "error" and data["type"] == "error"
    assert data["error"]["type"] == "overloaded_error" and data["error"]["message"]
    assert "message_stop" not in [n for n, _ in events]


async def test_pings_while_waiting_for_first_token(make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await make_client()
    monkeypatch.setattr(generate, "PING_INTERVAL_S", 0.02)
    from dynamo_mono.serving.pool import InstancePool

    real = InstancePool.generate
    pinged = asyncio.Event()

    async def slow_start(self, req):  # the engine's first token waits until the client has had pings
        await pinged.wait()
        async for out in real(self, req):
            yield out

    monkeypatch.setattr(InstancePool, "generate", slow_start)
    r = await client.post("/v1/messages", json={**body("Hello"), "stream": True})
    assert r.status == 200, await r.text()
    raw = b""
    while raw.count(b"event: ping\n") < 3:
        raw += await r.content.readuntil(b"\n\n")
    pinged.set()
    raw += await r.content.read()
    events = parse_sse(raw.decode())
    names = [n for n, _ in events]
    first_block = names.index("content_block_start")
    assert names[0] == "message_start" and names[1:first_block] == ["ping"] * (first_block - 1)
    assert first_block >= 4  # the first ping, then more while waiting
    assert "ping" not in names[first_block:]


async def test_client_disconnect_mid_stream_frees_request(make_client: Any) -> None:
    client = await make_client(speedup_ratio=0.1)
    from dynamo_mono.http.state import STATE

    state = client.app[STATE]
    # LONG_ANSWER takes ~130 s to generate at speedup 0.1: ending within the wait's hang guard below means
    # the disconnect cut it off, however fast or slow the machine.
    r = await client.post("/v1/messages", json=body("LONG_ANSWER", max_tokens=4000, stream=True))
    await r.content.readuntil(b"event: content_block_delta")
    assert state.inflight == 1
    r.close()
    engine = next(iter(state.models.values())).pool.instances[0].engine
    await wait_until(lambda: state.inflight == 0 and engine.load_metrics()[0].running == 0,
                     "the request to end after the disconnect")


async def test_no_instance_is_http_503_before_stream(make_client: Any) -> None:
    client = await make_client(num_instances=0)
    r = await client.post("/v1/messages", json=body("Hello", stream=True))
    assert r.status == 503 and r.headers["Content-Type"].startswith("application/json")
    assert (await r.json())["error"]["type"] == "overloaded_error"
