"""Request fields are acted on or refused by name: never accepted and ignored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.openai.conftest import WEATHER_CALL, WEATHER_TOOL, Server, assert_envelope, chat, completion, reply

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize("path, field, value", [
    (CHAT, "logit_bias", {"5": 10}), (CHAT, "store", True), (CHAT, "service_tier", "flex"),
    (CHAT, "truncate_prompt_tokens", 8), (CHAT, "cache_salt", "x"), (CHAT, "use_beam_search", True),
    (CHAT, "best_of", 3), (CHAT, "length_penalty", 0.5), (CHAT, "return_tokens_as_token_ids", True),
    (CHAT, "spaces_between_special_tokens", False), (CHAT, "add_special_tokens", True),
    (CHAT, "echo", True), (CHAT, "modalities", ["text", "audio"]), (CHAT, "prediction", {"type": "content"}),
    (CHAT, "audio", {"voice": "alloy"}), (CHAT, "functions", [{"name": "f"}]), (CHAT, "function_call", "auto"),
    (CHAT, "web_search_options", {}), (CHAT, "verbosity", "low"), (CHAT, "mm_processor_kwargs", {}),
    (CHAT, "nvext", {"use_raw_prompt": True}), (CHAT, "nvext", {"max_thinking_tokens": 10}),
    (CHAT, "nvext", {"extra_fields": ["worker_id"]}),
    (COMPLETIONS, "logit_bias", {"5": 10}), (COMPLETIONS, "best_of", 2), (COMPLETIONS, "cache_salt", "x"),
])
async def test_unsupported_values_are_refused_by_name(server: Server, path: str, field: str, value: Any) -> None:
    body = (chat() if path == CHAT else completion()) | {field: value}
    status, data = await server.post(path, body)
    err = assert_envelope(data, 400)
    assert status == 400 and "not supported" in err["message"]
    named = next(iter(value)) if field == "nvext" and isinstance(value, dict) else field
    assert named in err["message"]
    assert not server.engine.requests  # nothing reached the engine


@pytest.mark.parametrize("path, body", [
    (CHAT, {"logit_bias": {}, "store": False, "service_tier": "auto", "length_penalty": 1.0, "best_of": 1,
            "modalities": ["text"], "spaces_between_special_tokens": True, "parallel_tool_calls": True}),
    (COMPLETIONS, {"echo": True, "best_of": 1, "use_beam_search": False}),
])
async def test_neutral_values_are_accepted(server: Server, path: str, body: dict) -> None:
    server.script(reply("ok"))
    status, data = await server.post(path, (chat() if path == CHAT else completion()) | body)
    assert status == 200, data


async def test_parallel_tool_calls_false_keeps_the_first_call(server: Server) -> None:
    two = WEATHER_CALL + WEATHER_CALL.replace("Paris", "Rome")
    server.script(reply(two))
    _, body = await server.post(CHAT, chat("Weather?", tools=[WEATHER_TOOL], parallel_tool_calls=False))
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert "Paris" in call["function"]["arguments"]
    server.script(reply(two))
    events = await server.stream(CHAT, chat("Weather?", tools=[WEATHER_TOOL], parallel_tool_calls=False))
    indexes = {tc["index"] for e in events if isinstance(e, dict) and e.get("choices")
               for tc in e["choices"][0]["delta"].get("tool_calls", [])}
    assert indexes == {0}
    server.script(reply(two))
    _, body = await server.post(CHAT, chat("Weather?", tools=[WEATHER_TOOL]))
    assert len(body["choices"][0]["message"]["tool_calls"]) == 2


async def test_documents_and_reasoning_effort_reach_the_template(server: Server, monkeypatch) -> None:
    seen: dict[str, Any] = {}
    model = next(iter(server.state.models.values()))
    template = model.info.chat_template
    render = template.render

    def spy(messages: Any, **kw: Any) -> str:
        seen.update(kw)
        return render(messages, **kw)

    monkeypatch.setattr(template, "render", spy)
    server.script(reply("ok"))
    docs = [{"title": "t", "text": "body"}]
    status, _ = await server.post(CHAT, chat(documents=docs, reasoning_effort="low"))
    assert status == 200 and seen["documents"] == docs and seen["reasoning_effort"] == "low"


async def test_greed_sampling_means_temperature_zero(server: Server) -> None:
    server.script(reply("ok"))
    await server.post(CHAT, chat(temperature=0.9, nvext={"greed_sampling": True}))
    assert server.engine.requests[0].sampling.temperature == 0.0


async def test_osl_hint_reaches_the_router(server: Server) -> None:
    server.script(reply("ok"))
    await server.post(CHAT, chat(nvext={"agent_hints": {"osl": 64}}))
    assert server.engine.requests[0].expected_output_tokens == 64
