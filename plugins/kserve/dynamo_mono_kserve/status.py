"""The one place where request outcomes become gRPC status codes (and the metrics' error label on gRPC)."""

from __future__ import annotations

import grpc

from dynamo_mono.api import (
    EngineError,
    EngineFailed,
    InvalidRequest,
    ModelNotFound,
    NoInstance,
    QueueFull,
    QueueTimeout,
    RequestTimedOut,
)

_BY_HTTP = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
            429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE,
            504: grpc.StatusCode.DEADLINE_EXCEEDED}


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for a request failure (TypeError if `exc` is not one)."""
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, exc.message
    if isinstance(exc, ModelNotFound):
        return grpc.StatusCode.NOT_FOUND, exc.message
    if isinstance(exc, (QueueFull, QueueTimeout)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message
    if isinstance(exc, NoInstance):
        return grpc.StatusCode.UNAVAILABLE, exc.message
    if isinstance(exc, (RequestTimedOut, TimeoutError)):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "request timed out"
    if isinstance(exc, (EngineFailed, EngineError)):
        retryable = getattr(exc, "retryable", True)
        code = grpc.StatusCode.UNAVAILABLE if retryable else grpc.StatusCode.INTERNAL
        return code, f"generation failed: {getattr(exc, 'message', None) or exc}"
    status = getattr(exc, "status", None)  # an ApiError
    if isinstance(status, int):
        return _BY_HTTP.get(status, grpc.StatusCode.INTERNAL), getattr(exc, "message", str(exc))
    raise TypeError(f"not a request outcome: {type(exc).__name__}")


def grpc_error_type(exc: BaseException) -> str:
    """The error_type metrics label of a failure on gRPC: "grpc_<code>"."""
    return "grpc_" + grpc_status(exc)[0].name.lower()
