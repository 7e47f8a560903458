"""The link between HTTP processes and the core: messages round-trip, refusals keep their class, metrics add up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import dynamo_mono.metrics  # noqa: F401  (no *_created series, as in the server)
from dynamo_mono.engine import EngineError, EngineOutput, EngineRequest, SamplingParams, StopConditions
from dynamo_mono.frontend_procs import messages as lm
from dynamo_mono.frontend_procs.metrics_merge import families_of, merged_exposition
from dynamo_mono.http.errors import to_api_error
from dynamo_mono.serving.errors import ContextLengthExceeded, QueueFull
from dynamo_mono.transports import messages as wm


def test_submit_and_batch_round_trip() -> None:
    req = EngineRequest("r1.1", [1, 2, 3], SamplingParams(), StopConditions(max_tokens=4), model="m",
                        block_hashes=[7], priority=-2)
    sub = lm.decode_to_core(lm.encode(lm.Submit(1, "m", [2], [req], 0.5)))
    assert sub.requests[0] == req and sub.streams == [2] and sub.latency_sensitivity == 0.5
    out = EngineOutput([5, 6], finish_reason="length", cached_tokens=3)
    batch = lm.decode_to_http(lm.encode(lm.Batch([lm.Admitted(1), wm.output_message(2, out),
                                                  lm.Failed(3, "EngineError", "gone")])))
    adm, o, f = batch.items
    assert adm.job == 1 and (o.stream, o.token_ids, o.finish_reason, o.cached_tokens) == (2, [5, 6], "length", 3)
    assert wm.engine_output(o) == out and f.message == "gone"


def test_refusals_keep_their_class_status_and_fields() -> None:
    for exc, status in ((QueueFull("queue is full"), 429), (ContextLengthExceeded("too long", param="messages"), 400)):
        back = lm.exception_of(lm.decode_to_http(lm.encode(lm.Batch([lm.failure_of(9, exc)]))).items[0])
        assert type(back) is type(exc) and back.param == exc.param and back.code == exc.code
        assert to_api_error(back).status == status
    back = lm.exception_of(lm.failure_of(1, EngineError("boom", retryable=False)))
    assert isinstance(back, EngineError) and back.retryable is False


def test_metrics_of_processes_add_up() -> None:
    def registry(n: int) -> CollectorRegistry:
        r = CollectorRegistry()
        Counter("reqs", "requests", ["model"], registry=r).labels("m").inc(n)
        Gauge("inflight", "in flight", ["model"], registry=r).labels("m").set(n)
        Histogram("lat", "latency", ["model"], buckets=(1, 2), registry=r).labels("m").observe(n)
        return r

    text = merged_exposition(registry(1), [families_of(registry(2)), families_of(registry(3))]).decode()
    assert 'reqs_total{model="m"} 6.0' in text
    assert 'inflight{model="m"} 6.0' in text
    assert 'lat_bucket{le="1.0",model="m"} 1.0' in text and 'lat_bucket{le="2.0",model="m"} 2.0' in text
    assert 'lat_count{model="m"} 3.0' in text and text.count("# TYPE reqs_total counter") == 1
