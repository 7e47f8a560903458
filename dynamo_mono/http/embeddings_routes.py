"""OpenAI /v1/embeddings: parse the request, run it through the shared request path, encode float or base64."""

from __future__ import annotations

import base64
import time

import orjson
from aiohttp import web

from dynamo_mono.http.body import read_json, validate
from dynamo_mono.http.generate import serve_unary
from dynamo_mono.http.state import STATE
from dynamo_mono.protocol.embeddings import CreateEmbeddingRequest, CreateEmbeddingResponse
from dynamo_mono.serving.embedding import EmbeddingParams, EmbeddingResult, embedding_job


async def create_embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = validate(CreateEmbeddingRequest, await read_json(request))
    model = state.model(req.model, kind="embedding")
    params = EmbeddingParams(dimensions=req.dimensions, truncate_prompt_tokens=req.truncate_prompt_tokens,
                             priority=req.priority or 0)
    rid = "embd-" + (req.request_id or request["request_id"])
    build = embedding_job(state, model, req.inputs(), params, rid)
    name, fmt = req.model, req.encoding_format
    del req

    def respond(result: EmbeddingResult) -> web.Response:
        return embeddings_response(rid, name, result, fmt)

    return await serve_unary(request, state, model, endpoint="embeddings", build=build, respond=respond)


def embeddings_response(rid: str, model: str, result: EmbeddingResult, encoding_format: str) -> web.Response:
    """OpenAI's list object; base64 is each vector's little-endian float32 bytes, as OpenAI sends them."""
    vectors = result.embeddings
    if encoding_format == "base64":
        raw = vectors.astype("<f4", copy=False)
        data = [{"object": "embedding", "embedding": base64.b64encode(row.tobytes()).decode("ascii"), "index": i}
                for i, row in enumerate(raw)]
    else:
        data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(vectors)]
    body = {"id": rid, "object": "list", "created": int(time.time()), "model": model, "data": data,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), content_type="application/json")


_schemas_registered = False


def add_routes(app: web.Application) -> None:
    global _schemas_registered
    app.router.add_post("/v1/embeddings", create_embeddings)
    if not _schemas_registered:
        from dynamo_mono.http.openapi import register_schema

        register_schema(CreateEmbeddingRequest)
        register_schema(CreateEmbeddingResponse, mode="serialization")
        _schemas_registered = True
