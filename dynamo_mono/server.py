"""Server startup and shutdown: plugins → models → engine instances → router/pool → HTTP → other frontends, and
SIGTERM drain."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from typing import Any

from aiohttp import web

from dynamo_mono.config import ConfigError, Settings
from dynamo_mono.frontends import enabled_frontends, start_frontends, stop_frontends
from dynamo_mono.http.app import create_app
from dynamo_mono.http.state import ServerState
from dynamo_mono.http.tls import server_ssl_context
from dynamo_mono.lora.manager import LoraManager, parse_lora_modules
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.errors import ServingError
from dynamo_mono.media.fetch import FetchPolicy, MediaFetcher
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.model_spec import ModelSpec, spec_from_settings, specs_from_file
from dynamo_mono.planner.service import prepare_specs, start_planner
from dynamo_mono.serving.media_input import MediaInput
from dynamo_mono.serving.launch import engine_registration, load_model, start_engines, stop_all
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.models import admission_queue, new_served_model, set_model_gauges
from dynamo_mono.serving.pool import Instance

log = logging.getLogger("dynamo_mono.server")


def check_parser(plugins: Any, kind: str, name: str | None, what: str) -> None:
    """ConfigError unless `name` (if set) is a registered parser of this kind."""
    if name is None:
        return
    try:
        plugins.get(kind, name)
    except LookupError as exc:
        raise ConfigError(f"invalid {what}={name!r}: {exc}") from None


def model_specs(settings: Settings, plugins: Any) -> list[ModelSpec]:
    """The configured models: each entry of --config, else the one model of the command line."""
    if settings.get("config"):
        given = [o for o in ("model", "served_model_name", "chat_template", "max_model_len", "reasoning_parser",
                             "tool_call_parser") if settings.source(o) == "cli"]
        if given:
            raise ConfigError(f"--config {settings.config} lists the models; do not also pass "
                              f"{', '.join('--' + g.replace('_', '-') for g in given)}")
        return specs_from_file(settings.config, {name: plugins.backend_options(name)
                                                 for name in plugins.backend_names()})
    return [spec_from_settings(settings, plugins.backend_options(settings.engine))]


async def build_state(settings: Settings, plugins: Any, specs: list[ModelSpec] | None = None) -> ServerState:
    """Load every configured model and start its local engine instances; ConfigError on bad configuration."""
    specs = model_specs(settings, plugins) if specs is None else specs
    fetcher = MediaFetcher(FetchPolicy.from_settings(settings))
    metrics = FrontendMetrics()
    state = ServerState(settings=settings, metrics=metrics, plugins=plugins,
                        admission=admission_queue(settings, settings.max_inflight_requests, "server"),
                        media_fetcher=fetcher, media_input=MediaInput.from_settings(settings, fetcher, metrics))
    state.loras = LoraManager(state)
    try:
        for spec in specs:
            await add_configured_model(state, spec)
        await load_static_loras(state)
    except BaseException:
        await stop_engines(state)
        raise
    return state


async def add_configured_model(state: ServerState, spec: ModelSpec) -> ServedModel:
    """One model of the CLI / config file: its files, its engines, its pool; ready once an instance is."""
    label = f"model {spec.name or spec.model or 'tiny-chatml'!r}"
    try:
        reg = engine_registration(state.plugins, spec, need_installed=spec.instances > 0)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    info = load_model(spec)
    if info.name in state.models:
        raise ConfigError(f"{label}: the name {info.name!r} is already served; give each model a distinct name")
    model = new_served_model(state, info, kind=spec.kind, reasoning_parser=spec.reasoning_parser,
                             tool_call_parser=spec.tool_call_parser, configured=True)
    ids = [state.new_worker_id() for _ in range(spec.instances)]  # contiguous: instance_id = worker id
    engines = await start_engines(reg, spec, info, first_id=ids[0] if ids else 0)
    state.add_model(model)
    for wid, engine in zip(ids, engines):
        model.add_instance(Instance(worker_id=wid, engine=engine, card=engine.model_card()))
    check_parser(state.plugins, "reasoning_parser", model.reasoning_parser, f"{label}: reasoning parser")
    check_parser(state.plugins, "tool_call_parser", model.tool_call_parser, f"{label}: tool-call parser")
    set_model_gauges(state, model)
    return model


async def load_static_loras(state: ServerState) -> None:
    """--lora-modules: load each adapter now (ConfigError naming the one that fails)."""
    try:
        modules = parse_lora_modules(state.settings.lora_modules)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for name, path in modules:
        try:
            await state.loras.load(name, path)
        except (ServingError, ApiError) as exc:
            raise ConfigError(f"--lora-modules {name}={path}: {exc}") from None


async def stop_engines(state: ServerState) -> None:
    """Stop every local engine instance of every model."""
    await stop_all([inst.engine for model in state.models.values() for inst in list(model.pool.instances.values())
                    if inst.local])


async def serve(settings: Settings, plugins: Any) -> None:
    """Run until SIGTERM/SIGINT; then drain in-flight requests up to --shutdown-timeout and exit."""
    from dynamo_mono.frontend_procs.http_proc import boot_from_env

    boot = boot_from_env()
    if boot is not None:  # one of the HTTP processes a core started (--api-server-count > 1)
        from dynamo_mono.frontend_procs.http_proc import run_http_process

        await run_http_process(settings, plugins, boot)
        return
    from dynamo_mono.frontend_procs.core import api_server_count

    http_count = api_server_count(settings)
    t0 = time.perf_counter()
    specs = model_specs(settings, plugins)
    if not settings.worker_token and any(s.instances == 0 for s in specs):
        raise ConfigError("a model with 0 instances is served only by remote workers: set --worker-token "
                          "(or DYN_WORKER_TOKEN)")
    ssl_context = server_ssl_context(settings)  # bad TLS files fail here, before any engine starts
    frontend_regs = enabled_frontends(settings, plugins)  # and bad frontend settings
    specs = prepare_specs(settings, specs)  # and bad planner settings
    state = await build_state(settings, plugins, specs)
    try:
        planner = await start_planner(state, specs)
    except BaseException:
        await stop_engines(state)
        raise
    workers = None
    if settings.worker_token:
        from dynamo_mono.worker.registry import WorkerRegistry, start_args

        workers = WorkerRegistry(state, **start_args(settings))
        await workers.start()
    state.loras.start()
    app = create_app(state)
    if http_count > 1:  # forwarded requests keep the client's scheme
        from dynamo_mono.frontend_procs.proxy import forwarded_scheme

        app.middlewares.insert(0, forwarded_scheme)
    if workers is not None:
        workers.add_routes(app)
    # The drain is ours (below); aiohttp's own grace period would add up to twice this again per request
    # still running after --shutdown-timeout, so keep it short: such requests are cut off at once.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    procs = None
    if http_count > 1:  # this process is the core: N HTTP processes accept on the port and forward to it
        from dynamo_mono.frontend_procs.core import HttpProcesses

        procs = HttpProcesses(state, runner, settings, http_count)
        try:
            host, port = await procs.start()
        except BaseException:
            await runner.cleanup()
            await state.loras.stop()
            if planner is not None:
                await planner.stop()
            await stop_engines(state)
            raise
    else:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        sock: socket.socket = site._server.sockets[0]  # the bound port, also when --port 0
        host, port = sock.getsockname()[:2]
    try:
        frontends = await start_frontends(frontend_regs, state)  # beside HTTP, sharing models and admission
    except BaseException:
        await (procs.stop(0) if procs is not None else site.stop())
        if workers is not None:
            await workers.stop()
        await runner.cleanup()
        await state.loras.stop()
        if planner is not None:
            await planner.stop()
        await stop_engines(state)
        raise
    scheme = "https" if ssl_context else "http"
    log.info("dynamo-mono serving %s on %s://%s:%s in %.2fs%s",
             ", ".join(f"{m.name} ({m.kind}, {len(m.pool.instances)} instance(s))" for m in state.models.values()),
             scheme, host, port, time.perf_counter() - t0, f" ({http_count} HTTP processes)" if procs else "")
    if settings.ready_file:
        tmp = settings.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{'https://' if ssl_context else ''}{host}:{port}\n")
        os.replace(tmp, settings.ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining %d in-flight request(s) for up to %.1fs",
             state.inflight + (procs.inflight if procs is not None else 0), settings.shutdown_timeout)
    state.draining = True
    deadline = time.monotonic() + settings.shutdown_timeout
    if procs is not None:  # they refuse new work too; their requests run here
        procs.drain()
    while (state.inflight > 0 or (procs is not None and procs.inflight > 0)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    left = state.inflight + (procs.inflight if procs is not None else 0)
    if left:
        log.warning("aborting %d request(s) still in flight", left)
    if procs is not None:  # what they still hold ends with them
        await procs.stop(0.0)
    await stop_frontends(frontends)
    if procs is None:
        await site.stop()
    if planner is not None:
        await planner.stop()
    if workers is not None:
        await workers.stop()
    await runner.cleanup()
    await state.loras.stop()
    await stop_engines(state)
