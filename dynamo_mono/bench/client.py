"""Sends one request and times it: TTFT, inter-chunk gaps, end-to-end latency, token counts, errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from dynamo_mono.bench import sse


@dataclass(slots=True)
class RequestRecord:
    """What the client saw for one request. Times are seconds (perf_counter based)."""

    start: float
    isl: int
    osl_requested: int
    ok: bool = False
    status: str = ""  # "200", "429", "conn", "timeout", "stream-error", ...
    error: str = ""
    ttft: float | None = None
    e2e: float | None = None
    itl: list[float] = field(default_factory=list)  # gaps between chunks carrying text
    output_tokens: int = 0
    prompt_tokens: int | None = None


async def send(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict, stream: bool,
               isl: int, osl: int) -> RequestRecord:
    """POST body to url and time the answer; never raises for HTTP or connection errors."""
    rec = RequestRecord(time.perf_counter(), isl, osl)
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                rec.status = str(resp.status)
                rec.error = (await resp.text(errors="replace"))[:300]
                rec.e2e = time.perf_counter() - rec.start
                return rec
            if stream:
                await _read_stream(resp, rec)
            else:
                raw = await resp.read()
                rec.e2e = rec.ttft = time.perf_counter() - rec.start
                _read_unary(raw, rec)
    except asyncio.TimeoutError:
        rec.status, rec.error = "timeout", "request timed out"
    except aiohttp.ClientError as exc:
        rec.status, rec.error = "conn", f"{type(exc).__name__}: {exc}"[:300]
    if rec.e2e is None:
        rec.e2e = time.perf_counter() - rec.start
    return rec


async def _read_stream(resp: aiohttp.ClientResponse, rec: RequestRecord) -> None:
    splitter = sse.LineSplitter()
    classify = sse.classify
    last = 0.0
    chunks = 0
    usage_line = b""
    itl = rec.itl
    done = False
    async for data in resp.content.iter_any():
        now = time.perf_counter()
        for line in splitter.feed(data):
            kind = classify(line)
            if kind == sse.TOKEN:
                if chunks == 0:
                    rec.ttft = now - rec.start
                else:
                    itl.append(now - last)
                last = now
                chunks += 1
                if b'"usage":{' in line:
                    usage_line = line
            elif kind == sse.USAGE:
                usage_line = line
            elif kind == sse.ERROR:
                rec.status, rec.error = "stream-error", sse.error_of(line)
            elif kind == sse.DONE:
                done = True
    rec.e2e = time.perf_counter() - rec.start
    usage = sse.usage_of(usage_line) if usage_line else None
    rec.output_tokens = int(usage.get("completion_tokens") or 0) if usage else chunks
    if usage and usage.get("prompt_tokens") is not None:
        rec.prompt_tokens = int(usage["prompt_tokens"])
    if rec.status:
        return
    if not done:
        rec.status, rec.error = "truncated", "stream ended without [DONE]"
        return
    rec.ok, rec.status = True, "200"


def _read_unary(raw: bytes, rec: RequestRecord) -> None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        rec.status, rec.error = "bad-json", raw[:200].decode("utf-8", "replace")
        return
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if isinstance(usage, dict):
        rec.output_tokens = int(usage.get("completion_tokens") or 0)
        if usage.get("prompt_tokens") is not None:
            rec.prompt_tokens = int(usage["prompt_tokens"])
    rec.ok, rec.status = True, "200"
