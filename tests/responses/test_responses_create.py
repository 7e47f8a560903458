"""POST /v1/responses in-process: output items, usage, status, the request fields and what the engine receives."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.openai.conftest import WEATHER_CALL, MakeServer, Server, reply
from tests.responses.conftest import MODEL, RESPONSES, WEATHER, prompt_text, request, stream_events, valid_response

pytestmark = pytest.mark.timeout(20)
THINK_CALL = "<think>I need the weather.</think>Let me check." + WEATHER_CALL


async def test_text_response(server: Server) -> None:
    status, body = await server.post(RESPONSES, request(metadata={"k": "v"}, user="u-1", temperature=0.5))
    assert status == 200, body
    r = valid_response(body)
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert r.output_text == "Hello there." and r.model == MODEL
    [msg] = r.output
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed" and msg.id.startswith("msg_")
    assert (r.metadata, r.user, r.temperature, r.max_output_tokens, r.store) == ({"k": "v"}, "u-1", 0.5, 64, True)
    out = len(server.engine.tokenizer.encode("Hello there."))
    u = r.usage
    assert (u.output_tokens, u.output_tokens_details.reasoning_tokens) == (out, 0)
    assert u.input_tokens == len(server.engine.requests[0].token_ids)
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert server.engine.requests[0].sampling.temperature == 0.5
    assert server.engine.requests[0].stop.max_tokens == 64


async def test_cached_tokens_are_reported(server: Server) -> None:
    server.script(reply("Hi.", cached=4))
    _, body = await server.post(RESPONSES, request())
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 4


async def test_instructions_become_the_system_message(server: Server) -> None:
    status, _ = await server.post(RESPONSES, request("What now?", instructions="Answer in French."))
    assert status == 200
    text = prompt_text(server)
    assert text.index("Answer in French.") < text.index("What now?")
    assert "system" in text[:text.index("Answer in French.")]


async def test_message_items_with_parts(server: Server) -> None:
    items = [{"type": "message", "role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": "First part."},
                                          {"type": "input_text", "text": "Second part."}]},
             {"role": "assistant", "content": [{"type": "output_text", "text": "Earlier answer.", "annotations": []}]},
             {"role": "user", "content": "Follow-up."}]
    status, body = await server.post(RESPONSES, request(items))
    assert status == 200, body
    text = prompt_text(server)
    positions = [text.index(s) for s in ("Be brief.", "First part.\nSecond part.", "Earlier answer.", "Follow-up.")]
    assert positions == sorted(positions)


async def test_reasoning_and_function_call_items(server: Server) -> None:
    server.script(reply(THINK_CALL))
    status, body = await server.post(RESPONSES, request("Weather in Paris?", tools=[WEATHER]))
    assert status == 200, body
    r = valid_response(body)
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call"]
    reasoning, msg, call = r.output
    assert reasoning.id.startswith("rs_") and reasoning.summary == []
    assert [c.text for c in reasoning.content] == ["I need the weather."]
    assert msg.content[0].text == "Let me check."
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "Paris", "days": 2}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_") and call.status == "completed"
    assert r.status == "completed" and r.tools[0].name == "get_weather"
    tok = server.engine.tokenizer
    reasoning_tokens = r.usage.output_tokens_details.reasoning_tokens
    # "<think>" + the reasoning text + "</think>": those tokens, give or take the tag tokens' attribution
    low, high = len(tok.encode("I need the weather.")), len(tok.encode("<think>I need the weather.</think>"))
    assert low <= reasoning_tokens <= high
    assert reasoning_tokens < r.usage.output_tokens


async def test_tools_reach_the_template_and_tool_choice_none_leaves_text(server: Server) -> None:
    server.script(reply(WEATHER_CALL))
    _, body = await server.post(RESPONSES, request(tools=[WEATHER], tool_choice="none"))
    assert [o["type"] for o in body["output"]] == ["message"]
    assert "<tool_call>" in body["output"][0]["content"][0]["text"]
    _, body = await server.post(RESPONSES, request(tools=[WEATHER]))
    assert [o["type"] for o in body["output"]] == ["function_call"]
    assert '"name": "get_weather"' in prompt_text(server)


async def test_named_and_allowed_tools_choice(server: Server) -> None:
    other = {**WEATHER, "name": "get_time"}
    server.script(reply('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>' + WEATHER_CALL))
    _, body = await server.post(RESPONSES, request(tools=[WEATHER, other],
                                                   tool_choice={"type": "function", "name": "get_weather"}))
    assert [o["name"] for o in body["output"] if o["type"] == "function_call"] == ["get_weather"]
    assert valid_response(body).tool_choice.name == "get_weather"
    _, body = await server.post(RESPONSES, request(tools=[WEATHER, other], tool_choice={
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_weather"}]}))
    assert body["status"] == "completed"
    text = prompt_text(server)
    assert '"name": "get_weather"' in text and '"name": "get_time"' not in text


async def test_parallel_tool_calls_false_keeps_the_first_call(server: Server) -> None:
    server.script(reply(WEATHER_CALL + WEATHER_CALL.replace("Paris", "Rome")))
    _, body = await server.post(RESPONSES, request(tools=[WEATHER]))
    assert [orjson.loads(o["arguments"])["city"] for o in body["output"]] == ["Paris", "Rome"]
    _, body = await server.post(RESPONSES, request(tools=[WEATHER], parallel_tool_calls=False))
    assert [orjson.loads(o["arguments"])["city"] for o in body["output"]] == ["Paris"]
    assert body["parallel_tool_calls"] is False


async def test_function_call_output_round_trip(server: Server) -> None:
    items = [{"role": "user", "content": "Weather in Paris?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}]
    status, body = await server.post(RESPONSES, request(items, tools=[WEATHER]))
    assert status == 200, body
    text = prompt_text(server)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in text


async def test_structured_output_reaches_the_engine(server: Server) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    server.script(reply('{"answer": "42"}'))
    _, body = await server.post(RESPONSES, request(text={"format": {"type": "json_schema", "name": "result",
                                                                    "schema": schema, "strict": True}}))
    r = valid_response(body)
    assert orjson.loads(r.output_text) == {"answer": "42"}
    assert r.text.format.type == "json_schema" and r.text.format.schema_ == schema
    assert server.engine.requests[-1].sampling.response_format == {
        "type": "json_schema", "json_schema": {"name": "result", "schema": schema, "strict": True}}
    await server.post(RESPONSES, request(text={"format": {"type": "json_object"}}))
    assert server.engine.requests[-1].sampling.response_format == {"type": "json_object"}
    await server.post(RESPONSES, request(text={"format": {"type": "text"}}))
    assert server.engine.requests[-1].sampling.response_format is None


async def test_reasoning_effort_is_a_template_kwarg(make_server: MakeServer, tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                        "effort={{ reasoning_effort | default('unset') }}\n<|im_start|>assistant\n")
    server = await make_server(chat_template=str(template))
    await server.post(RESPONSES, request(reasoning={"effort": "high"}))
    assert "effort=high" in prompt_text(server)
    await server.post(RESPONSES, request())
    assert "effort=unset" in prompt_text(server)


@pytest.mark.parametrize("stream", [False, True])
async def test_max_output_tokens_cut_is_incomplete(server: Server, stream: bool) -> None:
    server.script(reply("This answer is much longer than four tokens."))
    payload = request(max_output_tokens=4)
    if stream:
        events = await stream_events(server, payload)
        assert events[-1]["type"] == "response.incomplete"
        body = events[-1]["response"]
        assert [e["item"]["status"] for e in events if e["type"] == "response.output_item.done"] == ["incomplete"]
    else:
        _, body = await server.post(RESPONSES, payload)
    r = valid_response(body)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.usage.output_tokens == 4


async def test_max_output_tokens_over_the_context_names_the_field(server: Server) -> None:
    status, body = await server.post(RESPONSES, request(max_output_tokens=10**7))
    assert status == 400 and body["error"]["param"] == "max_output_tokens"
    assert "max_output_tokens" in body["error"]["message"]


async def test_metrics_use_the_responses_endpoint_label(server: Server) -> None:
    await server.post(RESPONSES, request())
    text = await (await server.client.get("/metrics")).text()
    assert any('endpoint="responses"' in line and 'status="success"' in line
               for line in text.splitlines() if "requests_total{" in line)


async def test_explicit_nulls_mean_the_defaults(server: Server) -> None:
    status, body = await server.post(RESPONSES, request(store=None, background=None, stream=None,
                                                        parallel_tool_calls=None, tool_choice=None, instructions=None))
    assert status == 200, body
    assert (body["store"], body["background"], body["parallel_tool_calls"], body["tool_choice"]) == (
        True, False, True, "auto")
