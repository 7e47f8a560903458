"""The KServe v2 gRPC frontend driven by a real Triton client (tritonclient.grpc): health, metadata, unary and
streaming inference, cancellation, errors as status codes, and the shared metrics."""

from __future__ import annotations

import queue
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from conformance.server import metric_value

pytestmark = pytest.mark.timeout(120)

MODEL = "tiny-chatml"
HANG_GUARD_S = 30.0


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def wait_metric(url: str, name: str, predicate, labels: dict[str, str] | None = None) -> float:
    """Poll /metrics until predicate(value) holds; the deadline is only a hang guard."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        value = metric_value(_metrics(url), name, labels)
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {name}{labels or ''} (last value {value})")
        time.sleep(0.02)  # paces the polling only


def _inputs(text: str, streaming: bool | None = None) -> list[tc.InferInput]:
    t = tc.InferInput("text_input", [1], "BYTES")
    t.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    inputs = [t]
    if streaming is not None:
        s = tc.InferInput("streaming", [1], "BOOL")
        s.set_data_from_numpy(np.array([streaming], dtype=bool))
        inputs.append(s)
    return inputs


def _text(result: tc.InferResult, name: str = "text_output") -> str:
    return result.as_numpy(name)[0].decode()


SEEDED = {"max_tokens": 24, "temperature": 0.8, "seed": 7, "ignore_eos": True}


def test_live_ready_and_model_ready(kserve) -> None:
    c = kserve.client()
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready(MODEL)
    assert not c.is_model_ready("no-such-model")


def test_model_metadata_and_config(kserve) -> None:
    c = kserve.client()
    md = c.get_model_metadata(MODEL, as_json=True)
    assert md["name"] == MODEL and md["platform"] == "dynamo-mono" and md["versions"] == ["1"]
    assert [(i["name"], i["datatype"]) for i in md["inputs"]] == [("text_input", "BYTES"), ("streaming", "BOOL")]
    assert [(o["name"], o["datatype"]) for o in md["outputs"]] == [("text_output", "BYTES"),
                                                                   ("finish_reason", "BYTES")]
    cfg = c.get_model_config(MODEL, as_json=True)["config"]
    assert cfg["name"] == MODEL and cfg["platform"] == "dynamo-mono" and cfg["backend"] == "dynamo-mono"
    assert [i["name"] for i in cfg["input"]] == ["text_input", "streaming"]


def test_unary_infer(kserve) -> None:
    r = kserve.client().infer(MODEL, _inputs("hello there"), parameters={"max_tokens": 5, "ignore_eos": True})
    assert _text(r)
    assert _text(r, "finish_reason") == "length"


def test_streaming_infer_token_by_token_matches_unary(kserve) -> None:
    c = kserve.client()
    unary = _text(c.infer(MODEL, _inputs("tell me a story"), parameters=SEEDED))
    results: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        c.async_stream_infer(MODEL, _inputs("tell me a story", streaming=True), parameters=SEEDED)
        deltas, finish = [], None
        while finish is None:
            result, error = results.get(timeout=HANG_GUARD_S)
            assert error is None, error
            deltas.append(_text(result))
            fr = result.as_numpy("finish_reason")
            finish = fr[0].decode() if fr is not None else None
    finally:
        c.stop_stream()
    assert finish == "length"
    assert len(deltas) > 1  # one response per step, not one in all
    assert "".join(deltas) == unary


def test_unary_with_streaming_true_is_refused(kserve) -> None:
    with pytest.raises(InferenceServerException) as e:
        kserve.client().infer(MODEL, _inputs("hi", streaming=True))
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "Streaming is not supported for this endpoint" in e.value.message()


@pytest.mark.parametrize("model, inputs, params, code, words", [
    (MODEL, [], None, "INVALID_ARGUMENT", "missing required input 'text_input'"),
    ("no-such-model", None, None, "NOT_FOUND", "does not exist"),
    (MODEL, None, {"max_tokenz": 3}, "INVALID_ARGUMENT", "unknown parameter 'max_tokenz'"),
    (MODEL, None, {"temperature": "hot"}, "INVALID_ARGUMENT", "must be a number"),
    (MODEL, None, {"top_p": 0.0}, "INVALID_ARGUMENT", "out of range"),
])
def test_errors_are_status_codes(kserve, model, inputs, params, code, words) -> None:
    c = kserve.client()
    if inputs is None:
        inputs = _inputs("hi")
    elif not inputs:
        s = tc.InferInput("streaming", [1], "BOOL")
        s.set_data_from_numpy(np.array([False], dtype=bool))
        inputs = [s]
    with pytest.raises(InferenceServerException) as e:
        c.infer(model, inputs, parameters=params)
    assert e.value.status() == f"StatusCode.{code}"
    assert words in e.value.message()


def test_stream_error_comes_as_error_message(kserve) -> None:
    c = kserve.client()
    results: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        c.async_stream_infer(MODEL, _inputs("hi"), parameters={"bogus": 1})
        result, error = results.get(timeout=HANG_GUARD_S)
    finally:
        c.stop_stream()
    assert result is None and "INVALID_ARGUMENT" in error.message() and "bogus" in error.message()


def test_metrics_carry_the_grpc_endpoint(kserve) -> None:
    kserve.client().infer(MODEL, _inputs("hi"), parameters={"max_tokens": 2})
    text = _metrics(kserve.url)
    assert metric_value(text, "dynamo_frontend_requests_total",
                        {"endpoint": "kserve_model_infer", "status": "success"}) >= 1
    assert metric_value(text, "dynamo_frontend_requests_total",
                        {"endpoint": "kserve_model_infer", "error_type": "grpc_invalid_argument"}) == 0


def test_cancelling_a_stream_aborts_the_engine_request(make_kserve) -> None:
    # 4000 decode steps of 80 ms (--speedup-ratio 0.1): minutes of generation, so the request is still running
    # when the stream is cancelled; the engine going idle within the hang guard means it was aborted.
    srv = make_kserve("--speedup-ratio", "0.1")
    c = srv.client()
    results: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        c.async_stream_infer(MODEL, _inputs("long story " * 50, streaming=True),
                             parameters={"max_tokens": 4000, "ignore_eos": True})
        result, error = results.get(timeout=HANG_GUARD_S)  # the first delta: generation is running
        assert error is None, error
        assert metric_value(_metrics(srv.url), "dynamo_engine_running_requests") == 1
    finally:
        c.stop_stream(cancel_requests=True)
    wait_metric(srv.url, "dynamo_engine_running_requests", lambda v: v == 0)
    wait_metric(srv.url, "dynamo_frontend_inflight_requests", lambda v: v == 0)
    wait_metric(srv.url, "dynamo_frontend_requests_total", lambda v: v == 1,
                {"endpoint": "kserve_model_stream_infer", "status": "cancelled"})


def test_queue_full_is_resource_exhausted(make_kserve) -> None:
    srv = make_kserve("--speedup-ratio", "0.1", "--max-inflight-requests", "1", "--max-queue-length", "0")
    c = srv.client()
    results: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        c.async_stream_infer(MODEL, _inputs("hold the slot", streaming=True),
                             parameters={"max_tokens": 4000, "ignore_eos": True})
        result, error = results.get(timeout=HANG_GUARD_S)  # admitted and generating: it holds the only slot
        assert error is None, error
        with pytest.raises(InferenceServerException) as e:
            srv.client().infer(MODEL, _inputs("hi"), parameters={"max_tokens": 2})
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        c.stop_stream(cancel_requests=True)
    text = _metrics(srv.url)
    assert metric_value(text, "dynamo_frontend_requests_total",
                        {"endpoint": "kserve_model_infer", "error_type": "grpc_resource_exhausted"}) == 1
