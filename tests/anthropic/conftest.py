"""Fixtures for the Anthropic route tests: an in-process app on the mocker with scripted outputs."""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dynamo_mono.plugins import get_plugins
from tests.app_builder import build_test_app

SCRIPT = os.path.join(os.path.dirname(__file__), "script.json")
MODEL = "tiny-chatml"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"},
                                                                  "days": {"type": "integer"}},
                                 "required": ["city"]}}
TIME_TOOL = {"name": "get_time", "description": "Current time",
             "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}


async def build_app(**overrides: Any) -> web.Application:
    """The real server app (mocker engine, scripted output, basic + hermes parsers) with option overrides."""
    plugins = get_plugins()
    opts = {"speedup_ratio": 0.0, "mocker_output": f"script:{SCRIPT}", "reasoning_parser": "basic",
            "tool_call_parser": "hermes", "log_level": "warning"}
    opts.update(overrides)
    return await build_test_app(plugins, opts)


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    async def make(**overrides: Any) -> TestClient:
        return await aiohttp_client(await build_app(**overrides))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


def parse_sse(raw: str) -> list[tuple[str, dict]]:
    """(event name, data) pairs of an SSE body; every event must have both lines."""
    events = []
    for chunk in raw.split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        assert set(lines) == {"event", "data"}, chunk
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def body(text: str = "Hello", **kw: Any) -> dict:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **kw}
