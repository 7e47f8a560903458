"""A worker's failure frames keep what the client must see: a refused parameter stays a 400 across the link."""

from __future__ import annotations

import pytest

from dynamo_mono.engine import EngineError, RequestRejected
from dynamo_mono.http.errors import to_api_error
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.transports import messages as m
from dynamo_mono.worker.process import failure
from dynamo_mono.worker.remote_engine import failure_error


def _across(exc: BaseException) -> EngineError:
    frame = m.decode(m.encode(failure(7, exc)))
    assert isinstance(frame, m.StreamFailed) and frame.stream == 7
    return failure_error(frame)


def test_rejected_parameters_stay_a_400_with_their_param() -> None:
    err = _across(RequestRejected("vllm: stop token id 1000000 out of vocabulary", param="stop_token_ids"))
    assert isinstance(err, RequestRejected) and not err.retryable
    api = to_api_error(err)
    assert (api.status, api.param, api.code) == (400, "stop_token_ids", "invalid_request")
    assert "out of vocabulary" in api.message


def test_a_generators_invalid_request_is_a_400_not_retried() -> None:
    err = _across(InvalidRequest("size 7x7 is not a multiple of 8", param="size"))
    assert isinstance(err, RequestRejected) and to_api_error(err).status == 400


@pytest.mark.parametrize("exc, retryable, status", [
    (EngineError("instance down"), True, 503),
    (EngineError("cannot serve this", retryable=False), False, 500),
    (RuntimeError("boom"), True, 503),
])
def test_engine_failures_keep_their_retry_flag(exc: BaseException, retryable: bool, status: int) -> None:
    err = _across(exc)
    assert type(err) is EngineError and err.retryable is retryable
    assert to_api_error(err).status == status
