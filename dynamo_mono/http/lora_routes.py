"""LoRA adapter management: Dynamo's /v1/loras routes and vLLM's /v1/load_lora_adapter + /v1/unload_lora_adapter."""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable

from aiohttp import web

from dynamo_mono.http.body import read_json
from dynamo_mono.http.errors import to_api_error
from dynamo_mono.http.middleware import json_response
from dynamo_mono.http.state import STATE
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.errors import InvalidRequest, ModelNotFound, ServingError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _check_admin(request: web.Request) -> None:
    """--lora-admin-key, when set, guards every management route (on top of --api-key, which guards all /v1)."""
    key = request.app[STATE].settings.lora_admin_key
    if not key:
        return
    given = request.headers.get("x-api-key", "")
    authz = request.headers.get("Authorization", "")
    if authz.lower().startswith("bearer "):
        given = authz[7:].strip()
    admin = request.headers.get("x-lora-admin-key")
    if admin is not None:  # with --api-key too, the admin key travels in its own header
        given = admin
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "invalid or missing LoRA admin key", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


def _dynamo(handler: Handler) -> Handler:
    """Dynamo's envelope on failures: {"status": "error", "message"}, plus the OpenAI `error` object, with a 4xx for
    what the client can fix (Dynamo answers 500 to everything) and 500 for engine failures."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            _check_admin(request)
            return await handler(request)
        except (ApiError, ServingError) as exc:
            err = exc if isinstance(exc, ApiError) else to_api_error(exc)
            body: dict[str, Any] = {"status": "error", "message": err.message, "error": err.openai_body()["error"]}
            return json_response(body, status=err.status, headers=dict(err.headers) or None)
    return wrapped


def _str_field(data: dict, name: str, *, required: bool = True) -> str | None:
    v = data.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise InvalidRequest(f"'{name}' must be a non-empty string", param=name)
    return v


def _refuse_unknown(data: dict, known: set[str]) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise InvalidRequest(f"unknown field(s) {extra}; accepted: {sorted(known)}", param=extra[0])


async def load_lora(request: web.Request) -> web.Response:
    """POST /v1/loras {"lora_name", "source": {"uri"}, "base_model"?} (Dynamo's shape)."""
    data = await read_json(request)
    _refuse_unknown(data, {"lora_name", "source", "base_model"})
    name = _str_field(data, "lora_name")
    src = data.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("uri"), str) or not src["uri"]:
        raise InvalidRequest("'source' must be an object with a non-empty 'uri' (file:///path or a local path)",
                             param="source")
    _refuse_unknown(src, {"uri"})
    adapter, new = await request.app[STATE].loras.load(name, src["uri"], _str_field(data, "base_model",
                                                                                     required=False))
    verb = "loaded successfully" if new else "already loaded"
    return json_response({"status": "success", "message": f"LoRA adapter '{name}' {verb}", "lora_name": name,
                          "lora_id": adapter.lora_id})


async def list_loras(request: web.Request) -> web.Response:
    manager = request.app[STATE].loras
    loras = manager.list()
    # Beyond Dynamo's shape: where each adapter is loaded and routed (its replica set's worker ids).
    return json_response({"status": "success", "loras": loras, "count": len(loras),
                          "instances": {a.name: sorted({k[0] for k in a.model.pool.keys})
                                        for a in manager.adapters.values()}})


async def unload_lora(request: web.Request) -> web.Response:
    name = request.match_info["lora_name"]
    adapter = await request.app[STATE].loras.unload(name)
    return json_response({"status": "success", "message": f"LoRA adapter '{name}' unloaded successfully",
                          "lora_name": name, "lora_id": adapter.lora_id})


async def vllm_load(request: web.Request) -> web.Response:
    """vLLM's POST /v1/load_lora_adapter {"lora_name", "lora_path", "load_inplace"?}: 400 when already loaded."""
    data = await read_json(request)
    _refuse_unknown(data, {"lora_name", "lora_path", "load_inplace", "base_model"})
    name = _str_field(data, "lora_name")
    path = _str_field(data, "lora_path")
    if data.get("load_inplace"):
        raise InvalidRequest("load_inplace is not supported: unload the adapter, then load it again",
                             param="load_inplace")
    loras = request.app[STATE].loras
    if name in loras.adapters:
        raise InvalidRequest(f"The lora adapter '{name}' has already been loaded.", param="lora_name")
    _, new = await loras.load(name, path, _str_field(data, "base_model", required=False))
    if not new:  # a concurrent load of the same name won
        raise InvalidRequest(f"The lora adapter '{name}' has already been loaded.", param="lora_name")
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


async def vllm_unload(request: web.Request) -> web.Response:
    """vLLM's POST /v1/unload_lora_adapter {"lora_name", "lora_int_id"?}."""
    data = await read_json(request)
    _refuse_unknown(data, {"lora_name", "lora_int_id"})
    name = _str_field(data, "lora_name")
    loras = request.app[STATE].loras
    have = loras.adapters.get(name)
    if have is None:
        raise ModelNotFound(f"The lora adapter '{name}' cannot be found.", param="lora_name")
    lid = data.get("lora_int_id")
    if lid is not None and lid != have.lora_id:
        raise InvalidRequest(f"lora_int_id {lid} is not the id of adapter '{name}' ({have.lora_id})",
                             param="lora_int_id")
    await loras.unload(name)
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


def _admin(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        _check_admin(request)
        return await handler(request)
    return wrapped


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/loras", _dynamo(load_lora))
    app.router.add_get("/v1/loras", _dynamo(list_loras))
    app.router.add_delete("/v1/loras/{lora_name:.+}", _dynamo(unload_lora))
    app.router.add_post("/v1/load_lora_adapter", _admin(vllm_load))
    app.router.add_post("/v1/unload_lora_adapter", _admin(vllm_unload))
