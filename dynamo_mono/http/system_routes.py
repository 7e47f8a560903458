"""System routes: /health, /live, /ready, /metrics, /openapi.json."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dynamo_mono.http.middleware import json_response
from dynamo_mono.http.openapi import openapi_document
from dynamo_mono.http.state import STATE, ServerState


def _instances(state: ServerState) -> list[dict]:
    now = time.monotonic()
    out = []
    for m in state.models.values():
        if m.parent is not None:  # an adapter: its instances are its base model's, listed there
            continue
        load = m.pool.router.load()
        for inst in m.pool.instances.values():
            usable = inst.usable(now)
            for key in inst.keys():
                out.append({"model": m.name, "worker_id": key[0], "dp_rank": key[1],
                            "local": inst.local, "state": "ready" if usable else "unavailable",
                            "disaggregation_mode": inst.role, "load": load.get(key, {})})
    return out


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ready = state.ready() and not state.draining
    now = time.monotonic()
    models = [{"name": m.name, "kind": m.kind, "configured": m.configured,
               "instances": [i.worker_id for i in m.pool.serving_instances()],
               "ready_instances": [i.worker_id for i in m.pool.serving_instances() if i.usable(now)],
               **({"parent": m.parent.name} if m.parent is not None else {})}
              for m in state.models.values() if m.configured or m.pool.instances]
    body = {"status": "healthy" if ready else "unhealthy", "ready": ready, "draining": state.draining,
            "uptime_s": round(now - state.started_at, 3), "inflight": state.inflight,
            "models": models, "instances": _instances(state)}
    return json_response(body, status=200 if ready else 503)


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "live"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    configured = [m for m in state.models.values() if m.configured and m.parent is None]
    missing = [m.name for m in configured if not m.pool.ready_instances()]
    if state.draining or not configured or missing:
        reason = "draining" if state.draining else ("no models" if not configured else
                                                    f"no ready instance for {missing}")
        return json_response({"status": "not ready", "reason": reason}, status=503)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    refresh_engine_gauges(state)
    if state.metrics_merge is not None:  # --api-server-count > 1: every process's samples, summed
        body = await state.metrics_merge(state.metrics.registry)
    else:
        body = generate_latest(state.metrics.registry)
    return web.Response(body=body,
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def refresh_engine_gauges(state: ServerState) -> None:
    """Pull each instance's load snapshot into the per-instance gauges (at scrape time, not per token)."""
    m = state.metrics
    for model in state.models.values():
        ready = model.pool.ready_instances()
        m.model_ready.labels(model.name).set(1 if ready else 0)
        m.model_instances.labels(model.name).set(sum(i.card.dp_size for i in ready))
        m.model_total_kv_blocks.labels(model.name).set(
            sum((i.card.total_kv_blocks or 0) * i.card.dp_size for i in model.pool.serving_instances()))
        if model.parent is not None:  # an adapter: the per-instance gauges are its base model's
            continue
        for inst in model.pool.instances.values():
            for lm in inst.engine.load_metrics():
                lbl = (model.name, str(inst.worker_id), str(lm.dp_rank))
                m.engine_running.labels(*lbl).set(lm.running)
                m.engine_waiting.labels(*lbl).set(lm.waiting)
                m.engine_kv_active.labels(*lbl).set(lm.kv_active_blocks)
                m.engine_kv_usage.labels(*lbl).set(lm.kv_active_blocks / lm.kv_total_blocks
                                                   if lm.kv_total_blocks else 0.0)
                m.engine_hit_rate.labels(*lbl).set(lm.prefix_hit_rate)
                m.engine_preemptions.labels(*lbl).set(lm.preemptions)
                if lm.kvbm is not None:
                    for name, gauge in m.kvbm.items():
                        gauge.labels(*lbl).set(getattr(lm.kvbm, name))
                if inst.card.media_input:  # models that take media input: their encoder-output cache
                    m.embedding_cache_hits.labels(*lbl).set(lm.embedding_cache_hits)
                    m.embedding_cache_misses.labels(*lbl).set(lm.embedding_cache_misses)
                    m.embedding_cache_bytes.labels(*lbl).set(lm.embedding_cache_bytes)
                if inst.role != "agg":  # disaggregated instances: KV moved between them
                    m.kv_transfer_bytes.labels(*lbl).set(lm.kv_transfer_bytes)
                    m.kv_transfer_failures.labels(*lbl).set(lm.kv_transfer_failures)
    if state.media_input is not None:
        m.media_cache_bytes.set(state.media_input.cache.bytes)


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/live", live)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
