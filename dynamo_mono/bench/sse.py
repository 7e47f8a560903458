"""Cheap server-sent-events scanning for OpenAI streams: classify `data:` lines without parsing their JSON."""

from __future__ import annotations

import orjson

TOKEN = 1  # a chunk carrying generated text
USAGE = 2  # the usage chunk (parsed for token counts)
ERROR = 3  # an error sent after the stream started
DONE = 4  # data: [DONE]
OTHER = 0  # role-only / finish / keep-alive chunks, comments, event: lines

_TEXT_KEYS = (b'"content":"', b'"text":"', b'"reasoning_content":"')


def has_text(payload: bytes) -> bool:
    """True when some content / text / reasoning_content string in the chunk is non-empty."""
    for key in _TEXT_KEYS:
        start = 0
        while True:
            i = payload.find(key, start)
            if i < 0:
                break
            j = i + len(key)
            if j < len(payload) and payload[j] != 0x22:  # next byte is not the closing quote
                return True
            start = j
    return False


def classify(line: bytes) -> int:
    """Kind of one SSE line (without its newline)."""
    if not line.startswith(b"data:"):
        return OTHER
    payload = line[5:].strip()
    if payload == b"[DONE]":
        return DONE
    if payload.startswith(b'{"error"'):
        return ERROR
    if b'"usage":{' in payload:
        # A usage chunk can also carry text (continuous usage stats): text wins, usage is read at the end.
        return TOKEN if has_text(payload) else USAGE
    return TOKEN if has_text(payload) else OTHER


def usage_of(line: bytes) -> dict | None:
    """The usage object of a data line, or None."""
    try:
        obj = orjson.loads(line[5:].strip())
    except orjson.JSONDecodeError:
        return None
    u = obj.get("usage") if isinstance(obj, dict) else None
    return u if isinstance(u, dict) else None


def error_of(line: bytes) -> str:
    """A short message for an in-stream error line."""
    try:
        err = orjson.loads(line[5:].strip()).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return line[:200].decode("utf-8", "replace")
    if isinstance(err, dict):
        return str(err.get("message") or err)[:200]
    return str(err)[:200]


class LineSplitter:
    """Accumulates stream reads and yields complete lines (CRLF tolerant)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines if ln and ln != b"\r"]
