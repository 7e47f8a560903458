"""Media routes: POST /v1/images/generations, /v1/videos, /v1/audio/speech, and GET /media/{path} for stored
results. Each parses its protocol, hands a MediaJob to the shared request path, and encodes the output."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
from aiohttp import web

from dynamo_mono.http.body import read_json, validate
from dynamo_mono.http.generate import serve_unary
from dynamo_mono.http.state import STATE, ServerState
from dynamo_mono.media.contract import MediaFile, MediaOutput
from dynamo_mono.media.fetch import FetchRefused
from dynamo_mono.media.store import MediaNotFound, MediaStore
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.protocol.media import CreateImageRequest, CreateSpeechRequest, CreateVideoRequest
from dynamo_mono.serving.errors import InvalidRequest, ModelNotFound
from dynamo_mono.serving.media import MediaParams, media_job
from dynamo_mono.serving.model import ServedModel

# Outputs larger than this are base64-encoded and serialised on a worker thread (a video can be tens of MB).
INLINE_ENCODE_BYTES = 256 * 1024
MEDIA_STORE: web.AppKey[MediaStore] = web.AppKey("media_store", MediaStore)


def model_of_kind(state: ServerState, name: str | None, kind: str, route: str) -> ServedModel:
    """The model a media request names, or the one model of that kind when it names none."""
    if name is not None:
        return state.model(name, kind=kind)
    served = [m for m in state.models.values() if m.kind == kind and (m.configured or m.pool.instances)]
    if len(served) == 1:
        return served[0]
    if not served:
        raise ModelNotFound(f"no {kind} model is served; {route} needs one", param="model")
    raise InvalidRequest(f"several {kind} models are served ({', '.join(sorted(m.name for m in served))}): "
                         "name one in 'model'", param="model")


async def create_image(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = validate(CreateImageRequest, await read_json(request))
    model = model_of_kind(state, req.model, "image", "/v1/images/generations")
    nv = req.nvext
    params = MediaParams(kind="image", prompt=req.prompt, output_format=req.output_format, n=req.n, size=req.size,
                         priority=req.priority or 0, **_denoising(nv))
    rid = request["request_id"]
    fmt = req.response_format or "url"
    prompt = req.prompt

    async def respond(out: MediaOutput) -> web.Response:
        items = await _deliver(request, state, "image", rid, out.files, fmt)
        _count(state, model, out)
        return await _json({"created": int(time.time()),
                            "data": [{**item, "revised_prompt": prompt} for item in items]})

    return await serve_unary(request, state, model, endpoint="images", build=media_job(state, model, params, rid),
                             respond=respond)


async def create_video(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = validate(CreateVideoRequest, await read_json(request))
    model = model_of_kind(state, req.model, "video", "/v1/videos")
    nv = req.nvext
    reference = None if req.input_reference is None else await read_input_reference(state, req.input_reference)
    params = MediaParams(kind="video", prompt=req.prompt, size=req.size, seconds=req.seconds,
                         fps=nv.fps if nv else None, num_frames=nv.num_frames if nv else None,
                         input_reference=reference, priority=req.priority or 0, **_denoising(nv))
    rid = request["request_id"]
    fmt = req.response_format or "url"

    async def respond(out: MediaOutput) -> web.Response:
        items = await _deliver(request, state, "video", rid, out.files, fmt)
        _count(state, model, out)
        return await _json({"id": f"video-{rid}", "object": "video", "model": model.name, "status": "completed",
                            "progress": 100, "created": int(time.time()), "data": items,
                            "inference_time_s": round(out.inference_time_s, 6)})

    return await serve_unary(request, state, model, endpoint="videos", build=media_job(state, model, params, rid),
                             respond=respond)


async def create_speech(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = validate(CreateSpeechRequest, await read_json(request))
    model = model_of_kind(state, req.model, "audio", "/v1/audio/speech")
    nv = req.nvext
    params = MediaParams(kind="audio", prompt=req.input, output_format=req.response_format or "wav",
                         voice=req.voice, speed=req.speed, seconds=nv.seconds if nv else None,
                         priority=req.priority or 0, **_denoising(nv))
    rid = request["request_id"]

    async def respond(out: MediaOutput) -> web.Response:
        _count(state, model, out)
        f = out.files[0]
        return web.Response(body=f.data, headers={"Content-Type": f.content_type})

    return await serve_unary(request, state, model, endpoint="audio", build=media_job(state, model, params, rid),
                             respond=respond)


async def get_media(request: web.Request) -> web.Response:
    """A stored result (response_format=url), while it is kept."""
    store = request.app[MEDIA_STORE]
    try:
        data, ctype = await store.get(request.match_info["path"])
    except MediaNotFound:
        raise ApiError(404, "no such media file (never stored here, or expired)", code="not_found") from None
    return web.Response(body=data, headers={"Content-Type": ctype, "Cache-Control": "private, max-age=3600"})


def _denoising(nv: Any) -> dict[str, Any]:
    if nv is None:
        return {}
    return {"negative_prompt": nv.negative_prompt, "num_inference_steps": nv.num_inference_steps,
            "guidance_scale": nv.guidance_scale, "seed": nv.seed}


async def read_input_reference(state: ServerState, value: str) -> bytes:
    """The image bytes of an input_reference (a data: URL, or a URL the guarded fetcher may fetch)."""
    try:
        media = await state.media_fetcher.fetch(value)
    except FetchRefused as exc:
        raise InvalidRequest(f"input_reference: {exc}", param="input_reference") from None
    if media.content_type is not None and not media.content_type.startswith("image/"):
        raise InvalidRequest(f"input_reference must be an image, not {media.content_type}", param="input_reference")
    return media.data


async def _deliver(request: web.Request, state: ServerState, kind: str, rid: str, files: list[MediaFile],
                   fmt: str) -> list[dict[str, str]]:
    if fmt == "b64_json":
        if sum(len(f.data) for f in files) > INLINE_ENCODE_BYTES:
            return await asyncio.to_thread(_b64_items, files)
        return _b64_items(files)
    store = request.app[MEDIA_STORE]
    base = f"{request.scheme}://{request.host}"
    paths = await asyncio.gather(*(store.put(kind, rid, i, f) for i, f in enumerate(files)))
    state.metrics.media_stored_bytes.set(store.stored_bytes)
    return [{"url": store.url(p, base)} for p in paths]


def _b64_items(files: list[MediaFile]) -> list[dict[str, str]]:
    return [{"b64_json": base64.b64encode(f.data).decode("ascii")} for f in files]


def _count(state: ServerState, model: ServedModel, out: MediaOutput) -> None:
    state.metrics.media_outputs.labels(model.name).inc(len(out.files))


async def _json(body: dict) -> web.Response:
    size = sum(len(item.get("b64_json", "")) for item in body.get("data", ()))
    raw = await asyncio.to_thread(orjson.dumps, body) if size > INLINE_ENCODE_BYTES else orjson.dumps(body)
    return web.Response(body=raw, content_type="application/json")


_schemas_registered = False


def add_routes(app: web.Application, store: MediaStore) -> None:
    """Mount the media routes; `store` keeps url results (closed when the app is cleaned up)."""
    global _schemas_registered
    app[MEDIA_STORE] = store
    app.router.add_post("/v1/images/generations", create_image)
    app.router.add_post("/v1/videos", create_video)
    app.router.add_post("/v1/audio/speech", create_speech)
    app.router.add_get("/media/{path:.+}", get_media)
    app.on_startup.append(_start_sweeper)
    app.on_cleanup.append(_stop_sweeper)
    if not _schemas_registered:
        from dynamo_mono.http.openapi import register_schema

        for m in (CreateImageRequest, CreateVideoRequest, CreateSpeechRequest):
            register_schema(m)
        _schemas_registered = True


_SWEEPER: web.AppKey[asyncio.Task] = web.AppKey("media_sweeper", asyncio.Task)


async def _start_sweeper(app: web.Application) -> None:
    app[_SWEEPER] = asyncio.ensure_future(_sweep(app[MEDIA_STORE], app[STATE]))


async def _sweep(store: MediaStore, state: ServerState) -> None:
    """Expire stored media on time even when nothing new is written."""
    interval = min(60.0, store.retention_s / 4)
    while True:
        await asyncio.sleep(interval)
        await store.expire()
        state.metrics.media_stored_bytes.set(store.stored_bytes)


async def _stop_sweeper(app: web.Application) -> None:
    task = app[_SWEEPER]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    app[MEDIA_STORE].close()
