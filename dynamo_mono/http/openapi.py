"""The OpenAPI 3.1 document, generated from the pydantic request and response models."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from dynamo_mono import __version__
from dynamo_mono.protocol import responses as R
from dynamo_mono.protocol.openai import ChatCompletionRequest, CompletionRequest

_EXTRA_MODELS: list[tuple[type, str, str]] = []  # (model, mode, name) added by other route modules


def register_schema(model: type, mode: str = "validation") -> None:
    """Let a route module (e.g. the Anthropic API) add its models to the document."""
    _EXTRA_MODELS.append((model, mode, model.__name__))
    openapi_document.cache_clear()


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, desc: str = "OK") -> dict:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    return {str(c): _json(_ref("ErrorResponse"), "Error") for c in codes}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    models = [(ChatCompletionRequest, "validation"), (CompletionRequest, "validation"),
              (R.ChatCompletionResponse, "serialization"), (R.ChatCompletionChunk, "serialization"),
              (R.CompletionResponse, "serialization"), (R.ModelList, "serialization"),
              (R.ModelObject, "serialization"), (R.ErrorResponse, "serialization")]
    models += [(m, mode) for m, mode, _ in _EXTRA_MODELS]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    post_errors = _errors(400, 401, 404, 413, 415, 429, 503)
    paths: dict[str, Any] = {
        "/v1/chat/completions": {"post": {
            "operationId": "createChatCompletion", "summary": "Chat completion (JSON or SSE stream)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}}},
            "responses": {"200": {"description": "Completion, or an SSE stream of ChatCompletionChunk when stream=true",
                                  "content": {"application/json": {"schema": _ref("ChatCompletionResponse")},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **post_errors}}},
        "/v1/completions": {"post": {
            "operationId": "createCompletion", "summary": "Text completion (JSON or SSE stream)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CompletionRequest")}}},
            "responses": {"200": {"description": "Completion",
                                  "content": {"application/json": {"schema": _ref("CompletionResponse")},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **post_errors}}},
        "/v1/models": {"get": {"operationId": "listModels", "responses": {"200": _json(_ref("ModelList"))}}},
        "/v1/models/{model}": {"get": {
            "operationId": "getModel",
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("ModelObject")), **_errors(404)}}},
        "/health": {"get": {"operationId": "health", "responses": {"200": _json({"type": "object"}),
                                                                    "503": _json({"type": "object"}, "Unhealthy")}}},
        "/live": {"get": {"operationId": "live", "responses": {"200": _json({"type": "object"})}}},
        "/ready": {"get": {"operationId": "ready", "responses": {"200": _json({"type": "object"}),
                                                                  "503": _json({"type": "object"}, "Not ready")}}},
        "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    for model, _, name in _EXTRA_MODELS:
        extra_paths = getattr(model, "__openapi_paths__", None)
        if extra_paths:
            paths.update(extra_paths)
    return {"openapi": "3.1.0", "info": {"title": "dynamo-mono", "version": __version__},
            "paths": paths, "components": {"schemas": schemas}}
