"""The official openai SDK's Responses client against a real server: create, stream, tools, reasoning, structured
output, chaining with previous_response_id, retrieve / delete, background + cancel, errors."""

from __future__ import annotations

import json
import time

import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

pytestmark = pytest.mark.timeout(90)

TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                         "required": ["city"]}}]
EVENT = TypeAdapter(ResponseStreamEvent)


def client_for(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return client_for(base_url)


def test_create_and_stream(client: openai.OpenAI, model_name: str) -> None:
    raw = client.responses.with_raw_response.create(model=model_name, input="Tell me a story.", max_output_tokens=300,
                                                    instructions="Be brief.", metadata={"run": "1"})
    Response.model_validate(raw.http_response.json())  # validated, not merely constructed
    r = raw.parse()
    assert r.status == "completed" and r.output_text and r.metadata == {"run": "1"}
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    with client.responses.stream(model=model_name, input="Tell me a story.", max_output_tokens=300,
                                 instructions="Be brief.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:4]] == ["response.created", "response.in_progress", "response.output_item.added",
                                            "response.content_part.added"]
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text and final.usage.output_tokens > 0


def test_raw_stream_events_validate(base_url: str, model_name: str) -> None:
    """Every SSE event, as sent, validates against the SDK's ResponseStreamEvent union."""
    import httpx

    body = {"model": model_name, "input": "Hi", "max_output_tokens": 50, "stream": True}
    with httpx.stream("POST", base_url + "/v1/responses", json=body, timeout=30) as r:
        assert r.status_code == 200
        raw = r.read().decode()
    names = []
    for block in filter(str.strip, raw.split("\n\n")):
        head, data = block.split("\n", 1)
        event = EVENT.validate_json(data.removeprefix("data: "))
        assert head == "event: " + event.type
        names.append(event.type)
    assert names[0] == "response.created" and names[-1] in ("response.completed", "response.incomplete")


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI, model_name: str) -> None:
    r = client.responses.create(model=model_name, input="Go on.", max_output_tokens=5)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5


def test_previous_response_id_chains(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--mocker-output", "echo")  # the answer is the rendered prompt
    client = client_for(srv.url)
    first = client.responses.create(model="tiny-chatml", input="My name is Ann.", max_output_tokens=2000)
    second = client.responses.create(model="tiny-chatml", input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=2000)
    seen = second.output_text
    assert seen.index("My name is Ann.") < seen.index("What is my name?")
    assert client.responses.retrieve(second.id).output_text == seen
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="tiny-chatml", input="x", previous_response_id=first.id)


def test_tool_calls_and_results(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--mocker-output", "tool-calls:hermes", "--tool-call-parser", "hermes")
    client = client_for(srv.url)
    r = client.responses.create(model="tiny-chatml", input="Weather in Paris?", tools=TOOLS, max_output_tokens=300)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and isinstance(json.loads(calls[0].arguments)["city"], str)
    with client.responses.stream(model="tiny-chatml", input="Weather in Paris?", tools=TOOLS,
                                 max_output_tokens=300) as stream:
        args = "".join(e.delta for e in stream if e.type == "response.function_call_arguments.delta")
        final = stream.get_final_response()
    streamed = [o for o in final.output if o.type == "function_call"]
    assert json.loads(args) == json.loads(streamed[0].arguments)  # (no seed: not the unary call's arguments)
    r2 = client.responses.create(model="tiny-chatml", previous_response_id=r.id, tools=TOOLS, tool_choice="none",
                                 input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                         "output": "sunny"}], max_output_tokens=300)
    assert r2.status in ("completed", "incomplete")


def test_reasoning_item(make_server) -> None:
    srv = make_server("--speedup-ratio", "0", "--mocker-output", "reasoning:qwen3", "--reasoning-parser", "qwen3")
    client = client_for(srv.url)
    r = client.responses.create(model="tiny-chatml", input="Think first.", reasoning={"effort": "medium"},
                                max_output_tokens=1000)
    kinds = [o.type for o in r.output]
    assert kinds[0] == "reasoning" and "message" in kinds
    assert r.output[0].content[0].text and r.output_text
    assert 0 < r.usage.output_tokens_details.reasoning_tokens < r.usage.output_tokens
    with client.responses.stream(model="tiny-chatml", input="Think first.", max_output_tokens=1000) as stream:
        reasoning = "".join(e.delta for e in stream if e.type == "response.reasoning_text.delta")
        final = stream.get_final_response()
    assert reasoning and reasoning == final.output[0].content[0].text


class City(BaseModel):
    name: str
    population: int


def test_structured_output(make_server, tmp_path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"text": '{"name": "Paris", "population": 2100000}'}))
    srv = make_server("--speedup-ratio", "0", "--mocker-output", f"script:{script}")
    client = client_for(srv.url)
    r = client.responses.parse(model="tiny-chatml", input="Describe Paris.", text_format=City)
    assert r.output_parsed == City(name="Paris", population=2100000)
    assert r.text.format.type == "json_schema"


def test_background_and_cancel(make_server, tmp_path) -> None:
    # "slow" never finishes within the test (virtual time 10^5 times slower), so the cancel always finds it
    # running; one admission slot over both models shows that the cancel gave it back
    config = tmp_path / "models.yaml"
    config.write_text("models:\n"
                      "  - {name: slow, engine: mocker, options: {speedup_ratio: 0.00001}}\n"
                      "  - {name: fast, engine: mocker, options: {speedup_ratio: 0}}\n")
    srv = make_server("--config", str(config), "--max-inflight-requests", "1", engine_defaults=False)
    client = client_for(srv.url)
    r = client.responses.create(model="slow", input="A long story.", background=True, max_output_tokens=200)
    assert r.background and r.status in ("queued", "in_progress")
    assert client.responses.retrieve(r.id).status in ("queued", "in_progress")
    cancelled = client.responses.cancel(r.id)
    assert cancelled.status == "cancelled" and client.responses.retrieve(r.id).status == "cancelled"
    assert client.responses.create(model="fast", input="Hi", max_output_tokens=300).status == "completed"
    done = client.responses.create(model="fast", input="Short.", background=True, max_output_tokens=300)
    deadline = time.monotonic() + 60  # a hang guard; the loop waits for the state, not for time
    while (got := client.responses.retrieve(done.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "background response never finished"
        time.sleep(0.02)
    assert got.status == "completed" and got.output_text


def test_errors(client: openai.OpenAI, model_name: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model_name, input="")
    assert "input must not be empty" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model_name, input=[{"type": "mystery"}])
    assert "unsupported item type 'mystery'" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model_name, input=[
            {"role": "user", "content": "hi"}, {"type": "function_call_output", "call_id": "call_x", "output": "1"}])
    assert "call_x" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=model_name, input="hi", tools=[{"type": "web_search"}])
    assert "not supported" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model_name, input="hi", previous_response_id="resp_missing")
