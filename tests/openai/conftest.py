"""Fixtures for the OpenAI route tests: the real app, in-process, on a scripted engine (or the mocker)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Union

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dynamo_mono.engine import EngineArgs, EngineOutput, EngineRequest, LoadMetrics, ModelCard, TokenLogprob
from dynamo_mono.hookspecs import hookimpl
from dynamo_mono.http.state import STATE, ServerState
from dynamo_mono.plugins import Plugins
from tests.app_builder import build_test_app

MODEL = "tiny-chatml"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
WEATHER_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'

# What the scripted engine does for one request, in order: yield an output, raise an exception, or wait for an
# asyncio.Event (to hold a request in flight until the test lets it go).
Item = Union[EngineOutput, BaseException, asyncio.Event]
Script = Callable[[EngineRequest, Any], list[Item]]  # (request, tokenizer)


class ScriptedEngine:
    """An Engine that yields exactly what the test scripted for each request (default: a fixed reply)."""

    def __init__(self, args: EngineArgs) -> None:
        self.args = args
        self.tokenizer = args.tokenizer
        self.script: Script = reply("Hello there.")
        self.requests: list[EngineRequest] = []
        self.up = True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def model_card(self) -> ModelCard:
        return ModelCard(name=self.args.served_model_name, max_model_len=self.args.max_model_len, block_size=16,
                         eos_token_ids=list(self.args.eos_token_ids))

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        self.requests.append(request)
        for item in self.script(request, self.tokenizer):
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, asyncio.Event):
                await item.wait()
                continue
            yield item

    async def abort(self, request_id: str) -> None:
        pass

    def set_kv_event_sink(self, sink: Any) -> None:
        pass

    def kv_snapshot(self) -> list:
        return []

    def load_metrics(self) -> list[LoadMetrics]:
        return [LoadMetrics()]

    def healthy(self) -> bool:
        return self.up


class _ScriptedPlugin:
    @hookimpl
    def register_engines(self, register: Callable[..., None]) -> None:
        register("scripted", ScriptedEngine, description="test engine: yields what the test scripted")


def _plugins() -> Plugins:
    plugins = Plugins()
    plugins.load_entry_points()
    plugins.register_module(_ScriptedPlugin(), "scripted-test-engine")
    return plugins


PLUGINS = _plugins()


def reply(text: str, finish: str = "stop", *, cached: int = 0, per_output: int = 1, stop_token_id: int | None = None,
          then: BaseException | None = None, error_after: int | None = None,
          hold: asyncio.Event | None = None) -> Script:
    """A script answering every request with `text`, `per_output` tokens per output, cut at max_tokens ("length").

    error_after=K: after K tokens the engine reports finish_reason "error"; then=exc: raise exc after the tokens;
    hold=event: wait for the event after the first output.
    Logprobs (request.sampling.logprobs = k): -0.5 per token, top k = the token and k-1 others (-1.5, -2.5, ...).
    """

    def script(req: EngineRequest, tok: Any) -> list[Item]:
        ids = tok.encode(text)
        fin, stop_id = finish, stop_token_id
        if len(ids) >= req.stop.max_tokens:
            ids, fin, stop_id = ids[: req.stop.max_tokens], "length", None
        if error_after is not None:
            ids = ids[:error_after]
        outs: list[Item] = []
        for k in range(0, len(ids), per_output):
            chunk = ids[k:k + per_output]
            o = EngineOutput(chunk)
            if req.sampling.logprobs is not None:
                o.logprobs = [TokenLogprob(t, -0.5, _top(t, req.sampling.logprobs)) for t in chunk]
            outs.append(o)
        if not outs:
            outs.append(EngineOutput())
        first = outs[0]
        first.prompt_tokens, first.cached_tokens = len(req.token_ids), cached
        if error_after is not None:
            outs.append(EngineOutput(finish_reason="error", error="simulated engine failure"))
        elif then is not None:
            outs.append(then)
        else:
            outs[-1].finish_reason, outs[-1].stop_token_id = fin, stop_id
        if hold is not None:
            outs.insert(1, hold)
        return outs

    return script


def _top(token_id: int, k: int) -> list[tuple[int, float]]:
    others = [t for t in (5, 6, 7, 8) if t != token_id]
    return ([(token_id, -0.5)] + [(t, -1.5 - j) for j, t in enumerate(others)])[:k]


async def build_app(engine: str = "scripted", **overrides: Any) -> web.Application:
    """The real server app on the scripted engine (or the mocker), qwen3 + hermes parsers, with option overrides."""
    opts: dict[str, Any] = {"engine": engine, "log_level": "warning", "reasoning_parser": "qwen3",
                            "tool_call_parser": "hermes"}
    if engine == "mocker":
        opts["speedup_ratio"] = 0.0
    opts.update(overrides)
    return await build_test_app(PLUGINS, opts)


def per_choice(*scripts: Script) -> Script:
    """Choice i of a request (n > 1) follows scripts[i]."""
    return lambda req, tok: scripts[req.choice_index](req, tok)


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll a server-side state; the timeout is a hang guard only."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout}s"
        await asyncio.sleep(0.005)


@dataclass
class Server:
    """An in-process app, its test client, and (on the scripted engine) the engine to script."""

    client: TestClient

    @property
    def state(self) -> ServerState:
        return self.client.app[STATE]

    @property
    def engine(self) -> ScriptedEngine:
        return self.state.models[MODEL].pool.instances[0].engine

    def script(self, script: Script) -> None:
        self.engine.script = script

    async def post(self, path: str, payload: dict, **kw: Any) -> tuple[int, Any]:
        r = await self.client.post(path, json=payload, **kw)
        return r.status, await r.json()

    async def stream(self, path: str, payload: dict) -> list[Any]:
        """POST with stream=true; the SSE data payloads in order ("[DONE]" as the string)."""
        r = await self.client.post(path, json={**payload, "stream": True})
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/event-stream")
        return parse_sse(await r.text())


MakeServer = Callable[..., Awaitable[Server]]


@pytest.fixture
def make_server(aiohttp_client: Any) -> MakeServer:
    async def make(engine: str = "scripted", **overrides: Any) -> Server:
        return Server(await aiohttp_client(await build_app(engine, **overrides)))

    return make


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server()


def parse_sse(raw: str) -> list[Any]:
    """Data payloads of an OpenAI SSE body: one `data: ` line per event, "[DONE]" last and only last."""
    out: list[Any] = []
    for event in raw.split("\n\n"):
        if not event.strip():
            continue
        assert event.startswith("data: ") and "\n" not in event, event
        data = event[len("data: "):]
        out.append(data if data == "[DONE]" else orjson.loads(data))
    assert out and out[-1] == "[DONE]" and out.count("[DONE]") == 1, out[-3:]
    return out


def chat(content: str = "Hello", **kw: Any) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 64, **kw}


def completion(prompt: Any = "Once upon a time", **kw: Any) -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": 64, **kw}


def assert_envelope(body: dict, status: int) -> dict:
    """OpenAI's error envelope, with no internals leaking."""
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    for leak in ("Traceback", "pydantic", "/site-packages/", "File \""):
        assert leak not in err["message"]
    if status == 400:
        assert err["type"] == "invalid_request_error"
    return err

