"""Per-request accounting: in-flight gauge, requests_total by status, disconnects, failures."""

from __future__ import annotations

import asyncio

from dynamo_mono.http.state import ServerState
from dynamo_mono.http.errors import to_api_error
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.errors import ServingError


class RequestTracker:
    """Context manager around one API request; classifies how it ended for the metrics."""

    __slots__ = ("state", "model", "endpoint", "request_type", "status", "error_type", "mm")

    def __init__(self, state: ServerState, model: str, endpoint: str, stream: bool) -> None:
        self.state = state
        self.model = model
        self.endpoint = endpoint
        self.request_type = "stream" if stream else "unary"
        self.status = "success"
        self.error_type = ""
        self.mm = state.metrics.model(model)

    def __enter__(self) -> "RequestTracker":
        m = self.state.metrics
        self.mm.inflight.inc()
        m.child(m.requests_started, self.model, self.endpoint).inc()
        self.state.inflight += 1
        return self

    def fail(self, error_type: str) -> None:
        self.status = "error"
        self.error_type = error_type

    def __exit__(self, exc_type, exc, tb) -> None:
        m = self.state.metrics
        self.state.inflight -= 1
        self.mm.inflight.dec()
        if exc_type is not None:
            if issubclass(exc_type, (asyncio.CancelledError, ConnectionResetError)):
                self.status, self.error_type = "cancelled", "disconnected"
                self.mm.disconnected.inc()
            elif issubclass(exc_type, ApiError):
                self.status, self.error_type = "error", f"http_{exc.status}"
            elif issubclass(exc_type, ServingError):
                self.status, self.error_type = "error", f"http_{to_api_error(exc).status}"
            else:
                self.status, self.error_type = "error", "internal"
        if self.status == "error":
            m.child(m.failures, self.model, self.error_type).inc()
        m.child(m.requests_total, self.model, self.endpoint, self.request_type, self.status, self.error_type).inc()
