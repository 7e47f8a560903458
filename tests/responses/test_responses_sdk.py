"""The official openai SDK against the in-process server: responses.create / parse / stream / retrieve / delete."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.openai.conftest import WEATHER_CALL, Server, reply
from tests.responses.conftest import MODEL, WEATHER, prompt_text

pytestmark = pytest.mark.timeout(30)


async def test_create_text(server: Server, sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.create(model=MODEL, input="Hi!", instructions="Be nice.", max_output_tokens=32)
    assert r.status == "completed" and r.output_text == "Hello there." and r.instructions == "Be nice."
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0


async def test_create_with_tools(server: Server, sdk: openai.AsyncOpenAI) -> None:
    server.script(reply(WEATHER_CALL))
    r = await sdk.responses.create(model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice="auto")
    [call] = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "days": 2}
    # the tool's result goes back as a function_call_output item in the next turn
    server.script(reply("It is sunny in Paris."))
    r2 = await sdk.responses.create(model=MODEL, previous_response_id=r.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}])
    assert r2.output_text == "It is sunny in Paris." and r2.previous_response_id == r.id
    assert '<tool_response>\n{"sky": "sunny"}\n</tool_response>' in prompt_text(server)


async def test_create_with_reasoning(server: Server, sdk: openai.AsyncOpenAI) -> None:
    server.script(reply("<think>Two and two make four.</think>4"))
    r = await sdk.responses.create(model=MODEL, input="2+2?", reasoning={"effort": "low", "summary": "auto"})
    reasoning, msg = r.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "Two and two make four."
    assert msg.type == "message" and r.output_text == "4"
    assert r.reasoning.effort == "low" and r.usage.output_tokens_details.reasoning_tokens > 0


class Answer(BaseModel):
    answer: str
    confidence: float


async def test_structured_output_parse(server: Server, sdk: openai.AsyncOpenAI) -> None:
    server.script(reply('{"answer": "Paris", "confidence": 0.9}'))
    r = await sdk.responses.parse(model=MODEL, input="Capital of France?", text_format=Answer)
    assert r.output_parsed == Answer(answer="Paris", confidence=0.9)
    fmt = server.engine.requests[-1].sampling.response_format
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert fmt["json_schema"]["schema"]["required"] == ["answer", "confidence"]


async def test_stream_event_by_event(server: Server, sdk: openai.AsyncOpenAI) -> None:
    server.script(reply("<think>Let me see.</think>Sure." + WEATHER_CALL))
    seen: list[str] = []
    text, reasoning, args = "", "", ""
    async with sdk.responses.stream(model=MODEL, input="Weather?", tools=[WEATHER]) as stream:
        async for event in stream:
            seen.append(event.type)
            assert event.sequence_number == len(seen) - 1
            if event.type == "response.output_text.delta":
                text += event.delta
                assert event.snapshot == text  # the SDK's own accumulation agrees
            elif event.type == "response.reasoning_text.delta":
                reasoning += event.delta
            elif event.type == "response.function_call_arguments.delta":
                args += event.delta
                assert event.snapshot == args
        final = await stream.get_final_response()
    assert seen[:2] == ["response.created", "response.in_progress"] and seen[-1] == "response.completed"
    assert (reasoning, text) == ("Let me see.", "Sure.")
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert final.output_text == "Sure." and final.output[2].arguments == args


async def test_retrieve_chain_and_delete(server: Server, sdk: openai.AsyncOpenAI) -> None:
    first = await sdk.responses.create(model=MODEL, input="My name is Ann.", instructions="Only for turn one.")
    got = await sdk.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == first.output_text and got.status == "completed"
    second = await sdk.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id)
    text = prompt_text(server)
    assert text.index("My name is Ann.") < text.index("Hello there.") < text.index("What is my name?")
    assert "Only for turn one." not in text  # instructions are not carried over
    third = await sdk.responses.create(model=MODEL, input="And again?", previous_response_id=second.id)
    assert third.previous_response_id == second.id
    text = prompt_text(server)
    assert text.index("My name is Ann.") < text.index("What is my name?") < text.index("And again?")
    assert text.count("Hello there.") == 2
    await sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.create(model=MODEL, input="x", previous_response_id=first.id)
    # a response chained to a deleted one still carries the whole conversation
    await sdk.responses.create(model=MODEL, input="Last?", previous_response_id=third.id)
    assert "My name is Ann." in prompt_text(server)


async def test_store_false_is_not_retrievable(server: Server, sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.create(model=MODEL, input="Hi", store=False)
    assert r.store is False and r.status == "completed"
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(r.id)
