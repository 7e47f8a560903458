"""The one place where serving-layer outcomes become HTTP statuses (in the route's own envelope)."""

from __future__ import annotations

from dynamo_mono.engine import EngineError, RequestRejected
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving import errors as se
from dynamo_mono.serving.request import REQUEST_FAILURES  # noqa: F401  (re-exported for the routes)

_RETRY = {"Retry-After": "1"}


def to_api_error(exc: BaseException) -> ApiError:
    """The client-facing ApiError for a domain error, an engine failure or a timeout."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, se.ServingError):
        return _from_domain(exc)
    if isinstance(exc, TimeoutError):
        return ApiError(504, "request timed out", code="request_timeout")
    if isinstance(exc, RequestRejected):
        return ApiError(400, str(exc), param=exc.param, code="invalid_request")
    if isinstance(exc, EngineError):
        return _engine(str(exc), exc.retryable)
    raise TypeError(f"not a request outcome: {type(exc).__name__}")


def _engine(message: str, retryable: bool) -> ApiError:
    if retryable:
        return ApiError(503, f"generation failed: {message}", code="engine_error", headers=dict(_RETRY))
    return ApiError(500, f"generation failed: {message}", code="engine_error")


def _from_domain(exc: se.ServingError) -> ApiError:
    kw = {"param": exc.param, "code": exc.code}
    if isinstance(exc, se.InvalidRequest):
        return ApiError(400, exc.message, **kw)
    if isinstance(exc, se.ModelNotFound):
        return ApiError(404, exc.message, **kw)
    if isinstance(exc, (se.QueueFull, se.QueueTimeout)):
        return ApiError(429, exc.message, headers=dict(_RETRY), **kw)
    if isinstance(exc, se.NoInstance):
        return ApiError(503, exc.message, headers=dict(_RETRY), **kw)
    if isinstance(exc, se.RequestTimedOut):
        return ApiError(504, exc.message, **kw)
    if isinstance(exc, se.EngineFailed):
        return _engine(exc.message, exc.retryable)
    return ApiError(500, exc.message, **kw)


def http_error_type(exc: BaseException) -> str:
    """The error_type metrics label of a request failure on HTTP: "http_<status>" (TypeError if not one)."""
    return f"http_{to_api_error(exc).status}"
