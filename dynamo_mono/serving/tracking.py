"""Per-request accounting of any frontend: in-flight gauge, requests_total by endpoint and status, failures."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

# How a transport names a failure in the error_type label (HTTP: "http_<status>", gRPC: "grpc_<code>").
Classify = Callable[[BaseException], str]


class RequestTracker:
    """Context manager around one API request; classifies how it ended for the metrics.

    `classify(exc)` names a request failure (a domain error, an ApiError, an engine error, a timeout) for the
    error_type label; any other exception is "internal", a cancellation "disconnected".
    """

    __slots__ = ("state", "model", "endpoint", "request_type", "status", "error_type", "mm", "classify")

    def __init__(self, state: Any, model: str, endpoint: str, stream: bool, classify: Classify) -> None:
        self.state = state
        self.model = model
        self.endpoint = endpoint
        self.request_type = "stream" if stream else "unary"
        self.status = "success"
        self.error_type = ""
        self.mm = state.metrics.model(model)
        self.classify = classify

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
            else:
                self.status = "error"
                try:
                    self.error_type = self.classify(exc)
                except TypeError:  # not a request outcome
                    self.error_type = "internal"
        if self.status == "error":
            m.child(m.failures, self.model, self.error_type).inc()
        m.child(m.requests_total, self.model, self.endpoint, self.request_type, self.status, self.error_type).inc()
