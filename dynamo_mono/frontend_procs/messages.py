"""Messages of the link between HTTP processes and the core (msgspec msgpack over length-prefixed frames).

Requests go out as the worker protocol's EngineRequest; outputs come back as its Output structs, many streams'
outputs in one Batch frame per engine step (not one frame per token per stream)."""

from __future__ import annotations

from typing import Any, Union

import msgspec

from dynamo_mono.engine import EngineRequest, ModelCard
from dynamo_mono.transports import messages as wm

LINK_VERSION = 1


class Hello(msgspec.Struct, tag=True, array_like=True):
    """HTTP process → core, first frame: which process this is (the core answers with the Models)."""

    index: int
    pid: int
    version: int = LINK_VERSION


class Listening(msgspec.Struct, tag=True, array_like=True):
    """HTTP process → core: it has the models and accepts on the public port."""

    index: int


class ModelEntry(msgspec.Struct, array_like=True):
    """What an HTTP process needs to know of one served model to prepare its requests."""

    name: str
    kind: str
    configured: bool
    card: ModelCard | None
    block_size: int
    worker_ids: list[int]
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    parent: str | None = None  # a LoRA adapter's base model
    lora_name: str | None = None


class Models(msgspec.Struct, tag=True, array_like=True):
    """Core → HTTP process: the served models (sent on connect and whenever they change)."""

    models: list[ModelEntry]


class Submit(msgspec.Struct, tag=True, array_like=True):
    """HTTP process → core: admit the requests of one API request and start them; `streams[i]` carries the
    outputs of requests[i]. Answered by Admitted or Failed(stream=job)."""

    job: int
    model: str
    streams: list[int]
    requests: list[EngineRequest]
    latency_sensitivity: float | None = None


class Admitted(msgspec.Struct, tag=True, array_like=True):
    """Core → HTTP process: the job passed admission; its streams run."""

    job: int


class Failed(msgspec.Struct, tag=True, array_like=True):
    """Core → HTTP process: a job refused (stream = job id) or a stream that ended in an error; `kind` names the
    exception class (serving.errors or EngineError) the HTTP side raises again."""

    stream: int
    kind: str
    message: str
    param: str | None = None
    code: str | None = None
    retryable: bool = True


class Batch(msgspec.Struct, tag=True, array_like=True):
    """Core → HTTP process: everything for this process's jobs and streams in one loop pass of the core (one
    engine step): admissions, outputs, failures."""

    items: list[Union[wm.Output, Failed, Admitted]]


class Cancel(msgspec.Struct, tag=True, array_like=True):
    """HTTP process → core: the client went away (or the request ended early); abort these streams."""

    streams: list[int]


class MetricsPull(msgspec.Struct, tag=True, array_like=True):
    """Core → HTTP process: send your metric samples (at /metrics scrape time)."""

    seq: int


class MetricFamily(msgspec.Struct, array_like=True):
    name: str
    type: str
    documentation: str
    samples: list[tuple[str, dict[str, str], float]]


class MetricsPush(msgspec.Struct, tag=True, array_like=True):
    """HTTP process → core: its metric families, answering MetricsPull `seq`."""

    seq: int
    families: list[MetricFamily]


class Drain(msgspec.Struct, tag=True, array_like=True):
    """Core → HTTP process: the server is shutting down; refuse new work (503), finish what runs."""


ToCore = Union[Hello, Listening, Submit, Cancel, MetricsPush]
ToHttp = Union[Models, Admitted, Failed, Batch, MetricsPull, Drain]

_enc = msgspec.msgpack.Encoder(enc_hook=wm._enc_hook)
encode = _enc.encode
decode_to_core = msgspec.msgpack.Decoder(ToCore, dec_hook=wm._dec_hook).decode
decode_to_http = msgspec.msgpack.Decoder(ToHttp, dec_hook=wm._dec_hook).decode


def failure_of(stream: int, exc: BaseException) -> Failed:
    """A Failed naming exc's class, message and fields."""
    return Failed(stream, type(exc).__name__, getattr(exc, "message", None) or str(exc), getattr(exc, "param", None),
                  getattr(exc, "code", None), bool(getattr(exc, "retryable", True)))


def exception_of(f: Failed) -> Exception:
    """The exception a Failed stands for, rebuilt on the HTTP side (same class, so the same status)."""
    from dynamo_mono.engine import EngineError
    from dynamo_mono.serving import errors

    if f.kind == "EngineError":
        return EngineError(f.message, retryable=f.retryable)
    cls: Any = getattr(errors, f.kind, None)
    if isinstance(cls, type) and issubclass(cls, errors.ServingError):
        if cls is errors.EngineFailed:
            return cls(f.message, retryable=f.retryable)
        return cls(f.message, param=f.param, code=f.code)
    if f.kind == "TimeoutError":
        return TimeoutError(f.message)
    return EngineError(f"{f.kind}: {f.message}", retryable=False)
