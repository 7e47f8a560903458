"""API errors and their envelopes: OpenAI `{"error": {...}}` and Anthropic `{"type": "error", ...}`."""

from __future__ import annotations

from typing import Any

import orjson

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
    504: "timeout_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


class ApiError(Exception):
    """An error with an HTTP status that the client should see, in the route's envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type or _OPENAI_TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code if self.code is not None else self.status,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": _ANTHROPIC_TYPES.get(self.status, "api_error"), "message": self.message},
        }

    def body(self, flavor: str) -> bytes:
        return orjson.dumps(self.anthropic_body() if flavor == "anthropic" else self.openai_body())


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def format_validation_error(exc: Any) -> tuple[str, str | None]:
    """Turn a pydantic ValidationError into one clear message and the offending parameter."""
    errors = exc.errors(include_url=False, include_context=False)
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    # Drop pydantic's union-branch tags (e.g. 'str', 'list[...]') from the location.
    loc = [p for p in loc if not (p[:1].islower() and ("[" in p or p in ("str", "int", "float", "bool", "list", "dict")))]
    param = ".".join(loc) or None
    etype = first.get("type", "")
    msg = first.get("msg", "invalid value")
    if etype == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif etype == "missing":
        message = f"Missing required parameter: '{param}'"
    else:
        message = f"Invalid value for '{param}': {msg}" if param else msg
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return message, param
