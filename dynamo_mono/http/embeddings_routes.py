"""OpenAI /v1/embeddings: parse the request, run it through the shared request path, encode float or base64."""

from __future__ import annotations

import base64
import time

import numpy as np
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
        data = [{"object": "embedding", "embedding": text, "index": i} for i, text in enumerate(_base64_rows(vectors))]
    else:
        data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(vectors)]
    body = {"id": rid, "object": "list", "created": int(time.time()), "model": model, "data": data,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), content_type="application/json")


def _base64_rows(vectors: np.ndarray) -> list[str]:
    """Each row's little-endian float32 bytes in base64. When a row is a whole number of 3-byte groups, the rows'
    encodings are slices of the whole buffer's (one encode call instead of one per row)."""
    raw = np.ascontiguousarray(vectors, dtype="<f4")
    rows, dim = raw.shape
    row_bytes = dim * 4
    if row_bytes % 3:
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in raw]
    text = base64.b64encode(raw.tobytes()).decode("ascii")
    step = row_bytes // 3 * 4
    return [text[k:k + step] for k in range(0, rows * step, step)]


_schemas_registered = False


def add_routes(app: web.Application) -> None:
    global _schemas_registered
    app.router.add_post("/v1/embeddings", create_embeddings)
    if not _schemas_registered:
        from dynamo_mono.http.openapi import register_schema

        register_schema(CreateEmbeddingRequest)
        register_schema(CreateEmbeddingResponse, mode="serialization")
        _schemas_registered = True
