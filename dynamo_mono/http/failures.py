"""How generation failures reach clients: engine errors → 503 (retryable), timeouts → 504."""

from __future__ import annotations

from dynamo_mono.http.state import ServerState
from dynamo_mono.protocol.errors import ApiError


def request_timeout(state: ServerState) -> float | None:
    """The configured per-request time limit (None = no limit)."""
    return state.settings.request_timeout


def engine_failure(exc: BaseException) -> ApiError:
    """The client-facing error for an engine failure or a request that ran out of time."""
    if isinstance(exc, TimeoutError):
        return ApiError(504, "request timed out", code="request_timeout")
    return ApiError(503, f"generation failed: {exc}", code="engine_error", headers={"Retry-After": "1"})
