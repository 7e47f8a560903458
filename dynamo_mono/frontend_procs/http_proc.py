"""One HTTP process of `serve --api-server-count N`: accepts on the shared port (SO_REUSEPORT) and does the
per-request and per-token work of chat, completions and Anthropic messages (parse, validate, template,
tokenize, block hashes, detokenize, stop strings, parsers, SSE / JSON); the core admits, routes and runs the
engine requests. Every other route is forwarded to the core unchanged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dynamo_mono.block_hash import lora_seed
from dynamo_mono.frontend_procs import messages as lm
from dynamo_mono.frontend_procs.core_pool import CoreClient, CorePool, RouterView
from dynamo_mono.frontend_procs.metrics_merge import families_of
from dynamo_mono.frontend_procs.proxy import CoreProxy
from dynamo_mono.http import openai_routes
from dynamo_mono.http.middleware import add_response_headers, draining, errors, make_auth, make_cors, request_ids
from dynamo_mono.http.state import STATE, ServerState
from dynamo_mono.http.tls import server_ssl_context
from dynamo_mono.media.fetch import FetchPolicy, MediaFetcher
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.router.metrics import RouterMetrics
from dynamo_mono.serving.media_input import MediaInput
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.params import engine_id_space
from dynamo_mono.transports.framing import FramedConnection

log = logging.getLogger("dynamo_mono.frontend_procs.http")

BOOT_ENV = "DYN_MONO_HTTP_PROCESS"  # set by the core for the processes it starts: what `serve` runs as there


@dataclass(frozen=True)
class Boot:
    """What the core tells an HTTP process it starts."""

    link: str  # the core's link socket
    core: str  # the core's HTTP socket (forwarded routes)
    port: int  # the public port, already chosen by the core
    index: int

    def to_env(self) -> str:
        return json.dumps(self.__dict__)


def boot_from_env() -> Boot | None:
    raw = os.environ.get(BOOT_ENV)
    return Boot(**json.loads(raw)) if raw else None


class ForwardToCore(Exception):
    """The request names a model this process cannot prepare (a worker brought its files) or does not know yet (an
    adapter loaded a moment ago): the core serves it, or answers 404."""


class HttpState(ServerState):
    """ServerState of an HTTP process: models mirror the core's; requests for any other name go to the core."""

    def model(self, name: str, kind: str = "chat") -> ServedModel:
        if name not in self.models:
            raise ForwardToCore(name)
        return super().model(name, kind)


class ModelMirror:
    """Keeps state.models in step with the core's Models messages (local tokenizer files, core's cards)."""

    def __init__(self, state: HttpState, infos: dict[str, Any]) -> None:
        self.state = state
        self.infos = infos  # served name -> ModelInfo loaded from the same files as the core's
        self.client: CoreClient | None = None
        self.routers: dict[str, RouterMetrics] = {}
        self.ready = asyncio.Event()

    def update(self, msg: lm.Models) -> None:
        models: dict[str, ServedModel] = {}
        entries = {e.name: e for e in msg.models}
        for e in msg.models:
            base = entries.get(e.parent) if e.parent else e
            info = self.infos.get(base.name) if base is not None else None
            if e.kind != "chat" or info is None:  # served by the core for this process (ForwardToCore)
                continue
            rm = self.routers.get(e.name)
            if rm is None:
                rm = self.routers[e.name] = RouterMetrics(self.state.metrics.registry, e.name, loads=dict)
            pool = CorePool(self.client, e.name, e, RouterView(e.block_size, rm))
            m = ServedModel(e.name, info, pool, kind=e.kind, configured=e.configured,
                            reasoning_parser=e.reasoning_parser, tool_call_parser=e.tool_call_parser)
            if e.lora_name is not None:
                m.lora_name = e.lora_name
                m.hash_seed = lora_seed(e.lora_name)
            models[e.name] = m
        for e in msg.models:  # adapters point at their base model
            if e.parent and e.name in models and e.parent in models:
                models[e.name].parent = models[e.parent]
        self.state.models = models
        self.ready.set()


def _local(handler: Any, proxy: CoreProxy) -> Any:
    async def local(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ForwardToCore:
            return await proxy(request)
    return local


def create_http_app(state: HttpState, proxy: CoreProxy) -> web.Application:
    """Chat, completions and messages served here; everything else forwarded to the core as is."""
    s = state.settings

    @web.middleware
    async def forward_first(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.route.name == "core":
            return await proxy(request)  # the core's middlewares (auth, CORS, ids, errors) answer it
        return await handler(request)

    app = web.Application(client_max_size=s.max_body_size,
                          middlewares=[forward_first, request_ids, errors, make_cors(s.cors_origins),
                                       make_auth(s.api_key), draining])
    app[STATE] = state
    app.on_response_prepare.append(add_response_headers)
    app.router.add_post("/v1/chat/completions", _local(openai_routes.chat_completions, proxy))
    app.router.add_post("/v1/completions", _local(openai_routes.completions, proxy))
    if s.anthropic_api:
        from dynamo_mono.http import anthropic_routes

        app.router.add_post("/v1/messages", _local(anthropic_routes.create_message, proxy))
        app.router.add_post("/v1/messages/count_tokens", _local(anthropic_routes.count_tokens, proxy))
    app.router.add_route("*", "/{tail:.*}", proxy, name="core")
    return app


def load_infos(settings: Any, plugins: Any) -> dict[str, Any]:
    """The chat models' tokenizer / template files, read the way the core read them."""
    from dynamo_mono.server import model_specs
    from dynamo_mono.serving.launch import load_model

    out = {}
    for spec in model_specs(settings, plugins):
        if spec.kind == "chat":
            info = load_model(spec)
            out[info.name] = info
    return out


async def run_http_process(settings: Any, plugins: Any, boot: Boot) -> None:
    """Serve HTTP until SIGTERM (drain, then exit) or until the core goes away."""
    t0 = time.perf_counter()
    engine_id_space((os.getpid() << 32) + 1)  # the core and the other processes count from elsewhere
    fetcher = MediaFetcher(FetchPolicy.from_settings(settings))
    metrics = FrontendMetrics()
    state = HttpState(settings=settings, metrics=metrics, plugins=plugins, media_fetcher=fetcher,
                      media_input=MediaInput.from_settings(settings, fetcher, metrics))
    mirror = ModelMirror(state, load_infos(settings, plugins))
    core_drained = asyncio.Event()  # the core waited for the requests already: on SIGTERM, exit at once
    reader, writer = await asyncio.open_unix_connection(boot.link)
    conn = FramedConnection(reader, writer, max_frame=settings.max_frame_size)
    client = CoreClient(conn, on_models=mirror.update, metrics_families=lambda: families_of(metrics.registry),
                        on_drain=lambda: setattr(state, "draining", True) or core_drained.set())
    mirror.client = client
    client.send(lm.Hello(boot.index, os.getpid()))
    reading = asyncio.get_running_loop().create_task(client.read_loop())
    proxy = CoreProxy(boot.core)
    runner = web.AppRunner(create_http_app(state, proxy), handler_cancellation=True, access_log=None,
                           shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, boot.port, reuse_address=True, reuse_port=True,
                       ssl_context=server_ssl_context(settings))
    await mirror.ready.wait()  # the core sends the models first thing
    await site.start()
    client.send(lm.Listening(boot.index))
    log.debug("HTTP process %d listening on port %d in %.2fs", boot.index, boot.port, time.perf_counter() - t0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    core_gone = loop.create_task(client.closed.wait())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({core_gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
    state.draining = True
    if not client.closed.is_set() and not core_drained.is_set():
        deadline = time.monotonic() + settings.shutdown_timeout
        while state.inflight > 0 and time.monotonic() < deadline and not client.closed.is_set():
            await asyncio.sleep(0.02)
    await site.stop()
    await runner.cleanup()
    await proxy.close()
    conn.close()
    for t in (reading, core_gone, stopping):
        t.cancel()
