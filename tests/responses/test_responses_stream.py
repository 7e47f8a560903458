"""Streamed /v1/responses in-process: OpenAI's event names and order, sequence numbers, failures as response.failed."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from dynamo_mono.engine import EngineError
from dynamo_mono.http.responses_routes import STORE
from tests.openai.conftest import WEATHER_CALL, Server, reply, wait_until
from tests.responses.conftest import RESPONSES, WEATHER, parse_events, request, stream_events

pytestmark = pytest.mark.timeout(20)

TEXT_ITEM = ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
             "response.output_text.done", "response.content_part.done", "response.output_item.done"]
REASONING_ITEM = ["response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
                  "response.reasoning_text.done", "response.content_part.done", "response.output_item.done"]
CALL_ITEM = ["response.output_item.added", "response.function_call_arguments.delta",
             "response.function_call_arguments.done", "response.output_item.done"]


def shape(events: list[dict]) -> list[str]:
    """Event types with runs of the same delta event folded into one."""
    out: list[str] = []
    for e in events:
        if not (e["type"].endswith(".delta") and out and out[-1] == e["type"]):
            out.append(e["type"])
    return out


async def test_text_stream_order_and_content(server: Server) -> None:
    # include_usage (a chat-completions field aiperf sends) is what happens anyway: usage is in response.completed
    events = await stream_events(server, request(stream_options={"include_usage": True}))
    assert shape(events) == ["response.created", "response.in_progress", *TEXT_ITEM, "response.completed"]
    created, in_progress = events[0]["response"], events[1]["response"]
    assert created["status"] == in_progress["status"] == "in_progress" and created["output"] == []
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    item_id = events[2]["item"]["id"]
    assert all(d["item_id"] == item_id and d["output_index"] == 0 and d["content_index"] == 0 for d in deltas)
    text = "".join(d["delta"] for d in deltas)
    assert text == "Hello there."
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == text
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["id"] == created["id"]
    assert final["output"] == [next(e for e in events if e["type"] == "response.output_item.done")["item"]]
    assert final["usage"]["output_tokens"] == len(server.engine.tokenizer.encode(text))


async def test_reasoning_text_and_tool_call_stream(server: Server) -> None:
    server.script(reply("<think>I need the weather.</think>Let me check." + WEATHER_CALL))
    events = await stream_events(server, request(tools=[WEATHER]))
    assert shape(events) == ["response.created", "response.in_progress", *REASONING_ITEM, *TEXT_ITEM, *CALL_ITEM,
                             "response.completed"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta") == "I need the weather."
    args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args == args_done["arguments"] and orjson.loads(args) == {"city": "Paris", "days": 2}
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [(e["output_index"], e["item"]["type"]) for e in added] == [(0, "reasoning"), (1, "message"),
                                                                        (2, "function_call")]
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["call_id"] == added[2]["item"]["call_id"]
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


async def test_two_calls_stream_as_two_items(server: Server) -> None:
    server.script(reply(WEATHER_CALL + "\n" + WEATHER_CALL.replace("Paris", "Rome")))
    events = await stream_events(server, request(tools=[WEATHER]))
    assert shape(events) == ["response.created", "response.in_progress", *CALL_ITEM, *CALL_ITEM, "response.completed"]


async def test_streamed_and_unary_outputs_agree(server: Server) -> None:
    server.script(reply("<think>Hmm.</think>Answer." + WEATHER_CALL))
    events = await stream_events(server, request(tools=[WEATHER]))
    _, body = await server.post(RESPONSES, request(tools=[WEATHER]))

    def strip(items: list[dict]) -> list[dict]:
        return [{k: v for k, v in o.items() if k not in ("id", "call_id")} for o in items]

    assert strip(events[-1]["response"]["output"]) == strip(body["output"])
    assert events[-1]["response"]["usage"] == body["usage"]


@pytest.mark.parametrize("failure", ["finish_error", "raise"])
async def test_engine_failure_mid_stream_is_response_failed(server: Server, failure: str) -> None:
    if failure == "finish_error":
        server.script(reply("Hello there, how are you?", error_after=3))
    else:
        server.script(reply("Hello there", then=EngineError("worker 3 died")))
    events = await stream_events(server, request())
    assert events[-1]["type"] == "response.failed"
    assert any(e["type"] == "response.output_text.delta" for e in events), "tokens before the failure were streamed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "simulated engine failure" in failed["error"]["message"] or "worker 3 died" in failed["error"]["message"]
    stored = await (await server.client.get(f"{RESPONSES}/{failed['id']}")).json()
    assert stored["status"] == "failed"


async def test_client_disconnect_cancels_the_stored_response(server: Server) -> None:
    hold = asyncio.Event()
    server.script(reply("Hello there, how are you today?", hold=hold))
    resp = await server.client.post(RESPONSES, json=request(stream=True))
    head = b""
    while b"response.created" not in head:
        head += await resp.content.readline()
    created = orjson.loads((await resp.content.readline()).split(b"data: ", 1)[1])
    rid = created["response"]["id"]
    store = server.client.app[STORE]
    assert store.get(rid).status == "in_progress"
    resp.close()
    hold.set()
    await wait_until(lambda: store.get(rid).status == "cancelled", "stored response cancelled after the disconnect")
    await wait_until(lambda: server.state.inflight == 0, "request no longer in flight")


async def test_refused_stream_is_a_status_and_not_stored(make_server) -> None:
    server = await make_server(max_inflight_requests=1, max_queue_length=0)
    await server.state.admission.acquire()
    r = await server.client.post(RESPONSES, json=request(stream=True))
    assert r.status == 429 and (await r.json())["error"]["type"] == "rate_limit_error"
    assert len(server.client.app[STORE]) == 0
    server.state.admission.release()


def test_parse_events_rejects_a_gap_in_sequence_numbers() -> None:
    good = ('event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"m",'
            '"output_index":0,"content_index":0,"delta":"a","logprobs":[],"sequence_number":%d}\n\n')
    assert len(parse_events(good % 0 + good % 1)) == 2
    with pytest.raises(AssertionError):
        parse_events(good % 0 + good % 2)
