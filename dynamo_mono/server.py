"""Server startup and shutdown: plugins → model → engine instances → router/pool → HTTP, and SIGTERM drain."""

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
from dynamo_mono.engine import EngineArgs
from dynamo_mono.http.app import create_app
from dynamo_mono.http.state import ServerState
from dynamo_mono.http.tls import server_ssl_context
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.preprocess.model_dir import load_model_dir
from dynamo_mono.router.router import Router
from dynamo_mono.serving.admission import AdmissionQueue
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.pool import Instance, InstancePool

log = logging.getLogger("dynamo_mono.server")


def _check_parser(plugins: Any, kind: str, name: str | None, flag: str) -> None:
    if name is None:
        return
    try:
        plugins.get(kind, name)
    except LookupError as exc:
        raise ConfigError(f"invalid {flag}={name!r}: {exc}") from None


async def build_state(settings: Settings, plugins: Any) -> ServerState:
    """Load the model and start its local engine instances; raises ConfigError on bad configuration."""
    try:
        reg = plugins.get("engine", settings.engine)
    except LookupError as exc:
        raise ConfigError(f"invalid --engine={settings.engine!r}: {exc}") from None
    missing = reg.missing() if settings.num_instances else []  # remote workers bring their own engine
    if missing:
        hint = f"; install with: {reg.install_hint}" if reg.install_hint else ""
        raise ConfigError(f"engine {settings.engine!r} needs {', '.join(missing)}, which is not installed{hint}")
    info = load_model_dir(settings.model, served_model_name=settings.served_model_name,
                          chat_template_path=settings.chat_template, max_model_len=settings.max_model_len)
    metrics = FrontendMetrics()
    state = ServerState(settings=settings, metrics=metrics, plugins=plugins,
                        admission=_admission(settings, settings.max_inflight_requests, "server"))
    engines = []
    options = settings.as_dict()
    # Engines with passthrough_args get the unknown CLI args; option_sources tells an engine which
    # values the user gave (cli/env) versus another engine's default for a shared option name.
    options["extra_args"] = list(settings.extra_args)
    options["option_sources"] = {name: settings.source(name) for name in settings.as_dict()}
    for i in range(settings.num_instances):
        args = EngineArgs(model_path=info.path, served_model_name=info.name, instance_id=i,
                          max_model_len=info.max_model_len, eos_token_ids=list(info.eos_token_ids),
                          vocab_size=info.tokenizer.vocab_size, options=dict(options),
                          tokenizer=info.tokenizer)
        engines.append(reg.factory(args))
    await asyncio.gather(*(e.start() for e in engines))
    card = engines[0].model_card() if engines else None
    reasoning = settings.reasoning_parser or (card.reasoning_parser if card else None) or info.reasoning_parser
    tool = settings.tool_call_parser or (card.tool_call_parser if card else None) or info.tool_call_parser
    _check_parser(plugins, "reasoning_parser", reasoning, "--reasoning-parser")
    _check_parser(plugins, "tool_call_parser", tool, "--tool-call-parser")
    block_size = card.block_size if card else settings.get("block_size", 16) or 16
    router = Router(settings, block_size=block_size, registry=metrics.registry, model=info.name)
    pool = InstancePool(info.name, router, migration_limit=settings.migration_limit, metrics=metrics)
    pool.conditional_disagg = settings.router_conditional_disagg
    pool.disagg_min_prefill_tokens = settings.disagg_min_prefill_tokens
    for i, engine in enumerate(engines):
        pool.add(Instance(worker_id=i, engine=engine, card=engine.model_card()))
    state.models[info.name] = ServedModel(info.name, info, pool, reasoning_parser=reasoning, tool_call_parser=tool,
                                          admission=_admission(settings, settings.max_inflight_per_model,
                                                               f"model '{info.name}'"))
    _set_model_gauges(state)
    return state


def _admission(settings: Settings, limit: int | None, name: str) -> AdmissionQueue:
    return AdmissionQueue(limit, max_queue=settings.max_queue_length, max_wait=settings.max_queue_wait, name=name)


def _set_model_gauges(state: ServerState) -> None:
    m = state.metrics
    for model in state.models.values():
        card = model.pool.card()
        m.model_context_length.labels(model.name).set(model.max_model_len)
        m.model_migration_limit.labels(model.name).set(state.settings.migration_limit)
        if card is not None:
            m.model_block_size.labels(model.name).set(card.block_size)
            if card.max_num_seqs:
                m.model_max_num_seqs.labels(model.name).set(card.max_num_seqs)
            if card.max_num_batched_tokens:
                m.model_max_num_batched_tokens.labels(model.name).set(card.max_num_batched_tokens)


async def stop_engines(state: ServerState) -> None:
    for model in state.models.values():
        for inst in list(model.pool.instances.values()):
            if inst.local:
                try:
                    await inst.engine.stop()
                except Exception:  # shutting down: report and go on
                    log.exception("stopping instance %s failed", inst.worker_id)


async def serve(settings: Settings, plugins: Any) -> None:
    """Run until SIGTERM/SIGINT; then drain in-flight requests up to --shutdown-timeout and exit."""
    t0 = time.perf_counter()
    if settings.num_instances == 0 and not settings.worker_token:
        raise ConfigError("--num-instances 0 serves only remote workers: set --worker-token (or DYN_WORKER_TOKEN)")
    ssl_context = server_ssl_context(settings)  # bad TLS files fail here, before any engine starts
    state = await build_state(settings, plugins)
    workers = None
    if settings.worker_token:
        from dynamo_mono.worker.registry import WorkerRegistry, start_args

        workers = WorkerRegistry(state, **start_args(settings))
        await workers.start()
    app = create_app(state)
    if workers is not None:
        workers.add_routes(app)
    # The drain is ours (below); aiohttp's own grace period would add up to twice this again per request
    # still running after --shutdown-timeout, so keep it short: such requests are cut off at once.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    sock: socket.socket = site._server.sockets[0]  # the bound port, also when --port 0
    host, port = sock.getsockname()[:2]
    scheme = "https" if ssl_context else "http"
    log.info("dynamo-mono serving %s on %s://%s:%s (engine %s, %d instance(s)) in %.2fs", ", ".join(state.models),
             scheme, host, port, settings.engine, settings.num_instances, time.perf_counter() - t0)
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
    log.info("shutting down: draining %d in-flight request(s) for up to %.1fs", state.inflight,
             settings.shutdown_timeout)
    state.draining = True
    deadline = time.monotonic() + settings.shutdown_timeout
    while state.inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if state.inflight:
        log.warning("aborting %d request(s) still in flight", state.inflight)
    await site.stop()
    if workers is not None:
        await workers.stop()
    await runner.cleanup()
    await stop_engines(state)
