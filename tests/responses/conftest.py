"""Fixtures for the /v1/responses route tests: the OpenAI route tests' in-process app (imported, not copied),
and checks that every body and event validates against the official openai SDK's pydantic types."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.openai.conftest import MODEL, Server, make_server, server  # noqa: F401  (fixtures reused by import)

RESPONSES = "/v1/responses"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                          "required": ["city"]}}
_EVENT = TypeAdapter(ResponseStreamEvent)


def request(input: Any = "Hello", **kw: Any) -> dict:
    return {"model": MODEL, "input": input, "max_output_tokens": 64, **kw}


def valid_response(body: dict) -> Response:
    """The body validated (not merely constructed) as the SDK's Response."""
    return Response.model_validate(body)


def parse_events(raw: str) -> list[dict]:
    """A Responses SSE body: `event: NAME` + `data: {...}` per event, the name equal to the payload's type, every
    payload valid as the SDK's ResponseStreamEvent, sequence numbers 0, 1, 2, ..."""
    out = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        head, _, data = block.partition("\n")
        assert head.startswith("event: ") and data.startswith("data: ") and "\n" not in data, block
        payload = orjson.loads(data[len("data: "):])
        assert payload["type"] == head[len("event: "):]
        _EVENT.validate_python(payload)
        out.append(payload)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


async def stream_events(server: Server, payload: dict) -> list[dict]:
    r = await server.client.post(RESPONSES, json={**payload, "stream": True})
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"].startswith("text/event-stream")
    return parse_events(await r.text())


def prompt_text(server: Server, k: int = -1) -> str:
    """The prompt the engine received for its k-th request, as text."""
    return server.engine.tokenizer.decode(server.engine.requests[k].token_ids)


@pytest.fixture
def sdk(server: Server) -> openai.AsyncOpenAI:
    """The official async client, talking to the in-process server."""
    return openai.AsyncOpenAI(base_url=str(server.client.make_url("/v1")), api_key="unused", max_retries=0,
                              timeout=30)
