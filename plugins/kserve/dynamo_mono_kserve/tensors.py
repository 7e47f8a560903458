"""KServe v2 tensors <-> a text completion: the request's inputs and parameters, the responses' outputs.

Inputs: `text_input` (BYTES, one element) -> the prompt; optional `streaming` (BOOL, one element). Sampling
parameters come as request parameters; an unknown input, output or parameter, or a value of the wrong type or
range, is an InvalidRequest (INVALID_ARGUMENT), never ignored. Outputs: `text_output` and `finish_reason`
(BYTES), as raw_output_contents the way Triton clients read them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from dynamo_mono.api import GenParams, InvalidRequest
from dynamo_mono_kserve.proto import kserve_pb2 as pb

TEXT_INPUT, STREAMING = "text_input", "streaming"
TEXT_OUTPUT, FINISH_REASON = "text_output", "finish_reason"
OUTPUTS = (TEXT_OUTPUT, FINISH_REASON)
_LEN = struct.Struct("<I")


@dataclass(slots=True)
class TextRequest:
    """One ModelInferRequest, parsed: the model, the prompt, whether to stream, how to generate."""

    model: str
    version: str
    id: str
    text: str
    streaming: bool | None  # None: the request has no `streaming` input
    params: GenParams
    outputs: tuple[str, ...] = field(default=OUTPUTS)


def _one_element(t: Any, where: str) -> None:
    n = math.prod(t.shape) if t.shape else 0
    if n != 1:
        raise InvalidRequest(f"input '{where}' must hold exactly one element, got shape {list(t.shape)}",
                             param=where)


def _bytes_element(t: Any, raw: bytes | None) -> bytes:
    if t.datatype != "BYTES":
        raise InvalidRequest(f"input '{t.name}' must be BYTES, not {t.datatype or 'unset'}", param=t.name)
    _one_element(t, t.name)
    if raw is None:
        items = list(t.contents.bytes_contents)
        if len(items) != 1:
            raise InvalidRequest(f"input '{t.name}' must hold exactly one element", param=t.name)
        return items[0]
    if len(raw) < 4 or _LEN.unpack_from(raw)[0] != len(raw) - 4:
        raise InvalidRequest(f"input '{t.name}': malformed BYTES raw contents", param=t.name)
    return raw[4:]


def _bool_element(t: Any, raw: bytes | None) -> bool:
    if t.datatype != "BOOL":
        raise InvalidRequest(f"input '{t.name}' must be BOOL, not {t.datatype or 'unset'}", param=t.name)
    _one_element(t, t.name)
    if raw is None:
        items = list(t.contents.bool_contents)
        if len(items) != 1:
            raise InvalidRequest(f"input '{t.name}' must hold exactly one element", param=t.name)
        return bool(items[0])
    if len(raw) != 1:
        raise InvalidRequest(f"input '{t.name}': malformed BOOL raw contents", param=t.name)
    return raw != b"\x00"


# --- parameters: name -> (GenParams field, converter) ---------------------------------------------------------
def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, Any], int]:
    def conv(name: str, p: Any) -> int:
        kind = p.WhichOneof("parameter_choice")
        if kind not in ("int64_param", "uint64_param"):
            raise InvalidRequest(f"parameter '{name}' must be an integer", param=name)
        v = getattr(p, kind)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise InvalidRequest(f"parameter '{name}'={v} is out of range", param=name)
        return v
    return conv


def _float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[str, Any], float]:
    def conv(name: str, p: Any) -> float:
        kind = p.WhichOneof("parameter_choice")
        if kind not in ("double_param", "int64_param", "uint64_param"):
            raise InvalidRequest(f"parameter '{name}' must be a number", param=name)
        v = float(getattr(p, kind))
        if not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
            raise InvalidRequest(f"parameter '{name}'={v} is out of range", param=name)
        return v
    return conv


def _bool(name: str, p: Any) -> bool:
    if p.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidRequest(f"parameter '{name}' must be a boolean", param=name)
    return p.bool_param


def _stop(name: str, p: Any) -> list[str]:
    if p.WhichOneof("parameter_choice") != "string_param" or not p.string_param:
        raise InvalidRequest(f"parameter '{name}' must be a non-empty string", param=name)
    return [p.string_param]


PARAMETERS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "max_tokens": ("max_tokens", _int(1)),
    "min_tokens": ("min_tokens", _int(0)),
    "temperature": ("temperature", _float(0.0, 2.0)),
    "top_p": ("top_p", _float(0.0, 1.0, lo_open=True)),
    "top_k": ("top_k", _int(-1)),
    "min_p": ("min_p", _float(0.0, 1.0)),
    "seed": ("seed", _int(-(2**63), 2**63 - 1)),
    "presence_penalty": ("presence_penalty", _float(-2.0, 2.0)),
    "frequency_penalty": ("frequency_penalty", _float(-2.0, 2.0)),
    "repetition_penalty": ("repetition_penalty", _float(0.0, lo_open=True)),
    "stop": ("stop", _stop),
    "ignore_eos": ("ignore_eos", _bool),
    "skip_special_tokens": ("skip_special_tokens", _bool),
    "priority": ("priority", _int()),
}


def parse_infer(req: Any) -> TextRequest:
    """A ModelInferRequest as a TextRequest; InvalidRequest names what is wrong."""
    raws = list(req.raw_input_contents)
    if raws and len(raws) != len(req.inputs):
        raise InvalidRequest("raw_input_contents must have one entry per input", param="raw_input_contents")
    text: bytes | None = None
    streaming: bool | None = None
    for i, t in enumerate(req.inputs):
        raw = raws[i] if raws else None
        if t.parameters:
            raise InvalidRequest(f"input '{t.name}': input parameters are not supported", param=t.name)
        if t.name == TEXT_INPUT:
            text = _bytes_element(t, raw)
        elif t.name == STREAMING:
            streaming = _bool_element(t, raw)
        else:
            raise InvalidRequest(f"unknown input '{t.name}' (inputs: {TEXT_INPUT}, {STREAMING})", param=t.name)
    if text is None:
        raise InvalidRequest(f"missing required input '{TEXT_INPUT}'", param=TEXT_INPUT)
    try:
        prompt = text.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"input '{TEXT_INPUT}' is not valid UTF-8", param=TEXT_INPUT) from None
    params = GenParams()
    for name, value in req.parameters.items():
        spec = PARAMETERS.get(name)
        if spec is None:
            raise InvalidRequest(f"unknown parameter '{name}' (supported: {', '.join(PARAMETERS)})", param=name)
        setattr(params, spec[0], spec[1](name, value))
    outputs: tuple[str, ...] = OUTPUTS
    if req.outputs:
        names = []
        for o in req.outputs:
            if o.name not in OUTPUTS:
                raise InvalidRequest(f"unknown output '{o.name}' (outputs: {', '.join(OUTPUTS)})", param=o.name)
            if o.parameters:
                raise InvalidRequest(f"output '{o.name}': output parameters are not supported", param=o.name)
            names.append(o.name)
        outputs = tuple(dict.fromkeys(names))
    return TextRequest(req.model_name, req.model_version, req.id, prompt, streaming, params, outputs)


def infer_response(req: TextRequest, text: str, finish_reason: str | None) -> Any:
    """A ModelInferResponse with the requested outputs (finish_reason only once there is one)."""
    resp = pb.ModelInferResponse(model_name=req.model, model_version=req.version or "1", id=req.id)
    for name in req.outputs:
        if name == TEXT_OUTPUT:
            data = text.encode()
        elif finish_reason is not None:
            data = finish_reason.encode()
        else:
            continue
        resp.outputs.add(name=name, datatype="BYTES", shape=[1])
        resp.raw_output_contents.append(_LEN.pack(len(data)) + data)
    return resp
