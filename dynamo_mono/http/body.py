"""Reading and validating request bodies: content type, size, JSON, pydantic model → 4xx on any fault."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from dynamo_mono.protocol.errors import ApiError, format_validation_error

M = TypeVar("M", bound=BaseModel)


async def read_json(request: web.Request) -> Any:
    """The JSON body of a POST, or an ApiError (415 wrong type, 413 too large, 400 malformed)."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(415, f"Content-Type must be application/json, got '{ctype or 'none'}'",
                       code="unsupported_media_type")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body exceeds the limit of {request.client_max_size} bytes",
                       code="request_too_large") from None
    if not raw:
        raise ApiError(400, "request body is empty; expected a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON body: {exc.args[0] if exc.args else exc}",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, not {type(data).__name__}")
    return data


def validate(model: type[M], data: Any) -> M:
    """Validate once with pydantic; the first error becomes a one-line 400 naming the parameter."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = format_validation_error(exc)
        raise ApiError(400, message, param=param) from None
