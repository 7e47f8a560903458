"""Domain errors of the serving layer: why a request cannot run. Only http/ turns them into status codes."""

from __future__ import annotations


class ServingError(Exception):
    """A request the serving layer refuses or cannot finish; `param` names the offending request field."""

    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code


class InvalidRequest(ServingError):
    """The client can fix it: a bad value, a limit exceeded, an unknown pin."""


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus max_tokens) can never fit the model's context or any instance's KV cache."""

    default_code = "context_length_exceeded"


class ModelNotFound(ServingError):
    """No served model has this name."""

    default_code = "model_not_found"


class QueueFull(ServingError):
    """The admission queue already holds its maximum of waiting requests."""

    default_code = "queue_full"


class QueueTimeout(ServingError):
    """The request waited longer than allowed for admission or for a free instance."""

    default_code = "queue_timeout"


class NoInstance(ServingError):
    """No ready engine instance can take the request now (a retry later may succeed)."""

    default_code = "no_instance"


class RequestTimedOut(ServingError):
    """The request ran past --request-timeout."""

    default_code = "request_timeout"


class EngineFailed(ServingError):
    """The engine failed the request (after any migration); `retryable` says whether a retry may succeed."""

    default_code = "engine_error"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
