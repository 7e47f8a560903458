"""Generator-driven incremental tool-call parser: content scanning, call regions, streamed JSON arguments."""

from __future__ import annotations

import json
import re
from typing import Any, Generator

from dynamo_mono.parsers.base import MAX_HOLD, ToolCallDelta, ToolCallParser, new_call_id, partial_suffix
from dynamo_mono.parsers.schema import param_types

_WS = " \t\r\n"
_STR_SPECIAL = re.compile(r'["\\]')


def _scan_string(buf: str, p: int) -> tuple[int, bool]:
    """From inside a JSON string at p: (just past its closing quote, True), or (where to resume once more
    text arrives, False) when the buffer ends first (possibly in the middle of an escape)."""
    n = len(buf)
    while p < n:
        m = _STR_SPECIAL.search(buf, p)
        if m is None:
            return n, False
        p = m.start()
        if buf[p] == "\\":
            if p + 1 >= n:
                return p, False
            p += 2
            continue
        return p + 1, True
    return p, False
_STRUCT = re.compile(r'["{}\[\]]')
_SCALAR_END = re.compile(r'[\s,}\]<\[{]')

Gen = Generator[None, None, Any]


class Malformed(Exception):
    """The text after a start marker is not a well-formed call: release it as content."""


class StreamToolParser(ToolCallParser):
    """Base of the tag-based tool parsers.

    Content mode scans for `markers` (anywhere) and `lead_markers` (only before any non-blank
    content); a matched marker starts `region()`, a generator that reads `self._buf` from
    `self._pos`, yields when it needs more text and emits calls with `_open_call` / `_args`.
    A region that turns out malformed before it emitted anything goes back to content whole.
    """

    markers: tuple[str, ...] = ()
    lead_markers: tuple[str, ...] = ()

    def __init__(self, tools: list[dict] | None = None, *, max_hold: int = MAX_HOLD) -> None:
        self.types = param_types(tools)
        self.max_hold = max_hold
        self._all_markers = self.markers + self.lead_markers
        self.firsts = "".join(sorted({m[0] for m in self.markers}))
        self._at_start = bool(self.lead_markers)
        self.idle = not self._at_start
        self._buf = ""
        self._pos = 0
        self._gen: Gen | None = None
        self.marker = ""  # the marker that opened the current region
        self._eof = False
        self._content: list[str] = []
        self._calls: list[ToolCallDelta] = []
        self._index = 0
        self._emitted = False
        self._commit = 0  # buffer position up to which emitted calls account for the text

    # --- public ------------------------------------------------------------------------------
    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        if self.idle:
            for ch in self.firsts:
                if ch in text:
                    break
            else:
                return text, []
        self._buf += text
        self._run()
        self.idle = self._gen is None and not self._buf and not self._at_start
        return self._take()

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        self._eof = True
        self._run()
        if self._buf:
            self._content.append(self._buf)
            self._buf = ""
        self.idle = False  # nothing may follow finish()
        return self._take()

    # --- driver ------------------------------------------------------------------------------
    def _take(self) -> tuple[str, list[ToolCallDelta]]:
        content = "".join(self._content) if self._content else ""
        self._content.clear()
        calls = self._calls
        if not calls:
            return content, []
        self._calls = []
        if len(calls) > 1:  # coalesce pieces of the same call produced by one chunk
            merged = [calls[0]]
            for d in calls[1:]:
                last = merged[-1]
                if d.index == last.index and d.id is None:
                    last.arguments += d.arguments
                else:
                    merged.append(d)
            calls = merged
        return content, calls

    def _run(self) -> None:
        while True:
            if self._gen is None and not self._scan_content():
                return
            gen = self._gen
            try:
                next(gen)
            except StopIteration:
                self._end_region(self._pos)
                continue
            except Malformed:
                self._release()
                continue
            if len(self._buf) - self._commit > self.max_hold:
                gen.close()
                self._release()
                continue
            return

    def _scan_content(self) -> bool:
        """Emit content up to the next marker; start a region there. False when more text is needed."""
        buf = self._buf
        if not buf:
            return False
        if self._at_start:
            body = buf.lstrip(_WS)
            if not body:
                if self._eof:
                    self._content.append(buf)
                    self._buf = ""
                return False
            for m in self.lead_markers:
                if body.startswith(m):
                    self._at_start = False
                    lead = len(buf) - len(body)
                    if lead:
                        self._content.append(buf[:lead])
                    return self._start(buf[lead:], m)
            if not self._eof and any(m.startswith(body) for m in self.lead_markers):
                return False
            self._at_start = False
        cut = -1
        found = ""
        for m in self.markers:
            i = buf.find(m)
            if i >= 0 and (cut < 0 or i < cut):
                cut, found = i, m
        if cut >= 0:
            if cut:
                self._content.append(buf[:cut])
            return self._start(buf[cut:], found)
        keep = 0 if self._eof else partial_suffix(buf, self.markers)
        if keep < len(buf):
            self._content.append(buf[: len(buf) - keep] if keep else buf)
            self._buf = buf[len(buf) - keep:] if keep else ""
        return False

    def _start(self, buf: str, marker: str) -> bool:
        self._buf = buf
        self.marker = marker
        self._pos = len(marker)
        self._commit = 0
        self._emitted = False
        self._gen = self.region()
        return True

    def _end_region(self, pos: int) -> None:
        self._gen = None
        self._buf = self._buf[pos:]
        self._pos = 0
        self._commit = 0

    def _release(self) -> None:
        """A malformed region: its unaccounted text becomes content and scanning resumes after it."""
        self._gen = None
        if self._emitted:
            start = self._commit
        else:
            self._content.append(self.marker)
            start = len(self.marker)
        # the rest is rescanned as content: it may hold a real marker
        self._buf = self._buf[start:]
        self._pos = 0
        self._commit = 0

    # --- emission ----------------------------------------------------------------------------
    def _open_call(self, name: str) -> None:
        self._calls.append(ToolCallDelta(self._index, new_call_id(), name, ""))
        self._index += 1
        self._emitted = True
        self._commit = self._pos

    def _args(self, fragment: str, upto: int | None = None) -> None:
        if fragment:
            self._calls.append(ToolCallDelta(self._index - 1, None, None, fragment))
        self._commit = self._pos if upto is None else upto

    def _done_call(self) -> None:
        self._commit = self._pos

    # --- region helpers (generators) ---------------------------------------------------------
    def region(self) -> Gen:
        """Parse one call region starting at self._pos (just after self.marker)."""
        raise NotImplementedError
        yield

    def _more(self) -> Gen:
        if self._eof:
            raise Malformed
        yield

    def _ws(self) -> Gen:
        """Skip blanks; returns the next character, or "" at end of stream."""
        while True:
            buf = self._buf
            p = self._pos
            n = len(buf)
            while p < n and buf[p] in _WS:
                p += 1
            self._pos = p
            if p < n:
                return buf[p]
            if self._eof:
                return ""
            yield

    def _starts(self, lit: str) -> Gen:
        """Whether the text at the cursor is `lit` (consumed if so); waits until that is decidable."""
        while True:
            have = self._buf[self._pos:self._pos + len(lit)]
            if have == lit:
                self._pos += len(lit)
                return True
            if len(have) == len(lit) or not lit.startswith(have) or self._eof:
                return False
            yield

    def _expect(self, lit: str) -> Gen:
        ok = yield from self._starts(lit)
        if not ok:
            raise Malformed

    def _until(self, *lits: str) -> Gen:
        """Text up to the first of `lits`; returns (text, lit) with the cursor after lit."""
        searched = self._pos
        longest = max(len(x) for x in lits)
        while True:
            buf = self._buf
            best = -1
            hit = ""
            for lit in lits:
                i = buf.find(lit, searched)
                if i >= 0 and (best < 0 or i < best):
                    best, hit = i, lit
            if best >= 0:
                text = buf[self._pos:best]
                self._pos = best + len(hit)
                return text, hit
            searched = max(self._pos, len(buf) - longest + 1)
            yield from self._more()

    def _json_string(self) -> Gen:
        """A JSON string at the cursor, decoded."""
        raw = yield from self._json_raw(False)
        if not raw.startswith('"'):
            raise Malformed
        return json.loads(raw)

    def _json_raw(self, emit: bool) -> Gen:
        """Scan one JSON value at the cursor and return its raw text; with `emit`, stream it as arguments.

        Only structure is tracked while scanning (strings, escapes, bracket depth); the finished
        value is checked with json.loads.
        """
        c = yield from self._ws()
        if not c:
            raise Malformed
        start = p = self._pos
        sent = start
        if c in "{[":
            depth = 0
            in_str = False
            while True:
                buf = self._buf
                n = len(buf)
                done = False
                while p < n:
                    if in_str:
                        p, closed = _scan_string(buf, p)
                        if not closed:
                            break
                        in_str = False
                        continue
                    m = _STRUCT.search(buf, p)
                    if m is None:
                        p = n
                        break
                    p = m.start()
                    ch = buf[p]
                    p += 1
                    if ch == '"':
                        in_str = True
                    elif ch == "{" or ch == "[":
                        depth += 1
                    else:
                        depth -= 1
                        if depth == 0:
                            done = True
                            break
                if emit and p > sent:
                    self._args(buf[sent:p], p)
                    sent = p
                if done:
                    break
                if self._eof:
                    raise Malformed
                yield
        elif c == '"':
            p += 1
            while True:
                p, closed = _scan_string(self._buf, p)
                if closed:
                    break
                yield from self._more()
            if emit:
                self._args(self._buf[start:p], p)
        else:
            while True:
                m = _SCALAR_END.search(self._buf, p)
                if m is not None:
                    p = m.start()
                    break
                if self._eof:
                    p = len(self._buf)
                    break
                yield
            if emit:
                self._args(self._buf[start:p], p)
        raw = self._buf[start:p]
        self._pos = p
        try:
            json.loads(raw)
        except ValueError:
            raise Malformed from None
        return raw

    def _json_call(self, name_keys: tuple[str, ...] = ("name",), arg_keys: tuple[str, ...] = ("arguments", "parameters")) -> Gen:
        """A `{"name": …, "arguments": {…}}` object: the name goes out as soon as it is read, then
        the arguments stream raw; in any other key order the call goes out when the object closes."""
        yield from self._ws()
        yield from self._expect("{")
        name: str | None = None
        args: str | None = None
        opened = False
        first = True
        while True:
            c = yield from self._ws()
            if c == "}":
                self._pos += 1
                break
            if not first:
                yield from self._expect(",")
            first = False
            key = yield from self._json_string()
            yield from self._ws()
            yield from self._expect(":")
            if key in name_keys and name is None:
                name = yield from self._json_string()
                if args is None:
                    self._open_call(name)
                    opened = True
            elif key in arg_keys and args is None:
                c = yield from self._ws()
                if opened and c != '"':
                    args = yield from self._json_raw(True)
                else:
                    args = yield from self._json_raw(False)
                    if args.startswith('"'):  # arguments given as a JSON string
                        args = json.loads(args)
                        try:
                            json.loads(args)
                        except ValueError:
                            raise Malformed from None
                    if opened:
                        self._args(args)
            else:
                yield from self._json_raw(False)
        if name is None:
            raise Malformed
        if not opened:
            self._open_call(name)
            self._args(args if args is not None else "{}")
        elif args is None:
            self._args("{}")
        self._done_call()

    def _content_until(self, *lits: str, sink: list[str] | None = None) -> Gen:
        """Stream text as content (or into `sink`) up to the first of `lits` (consumed) or end of stream; returns the lit or ""."""
        out = self._content if sink is None else sink
        while True:
            buf = self._buf
            best = -1
            hit = ""
            for lit in lits:
                i = buf.find(lit, self._pos)
                if i >= 0 and (best < 0 or i < best):
                    best, hit = i, lit
            if best >= 0:
                if best > self._pos:
                    out.append(buf[self._pos:best])
                    self._emitted = True
                self._pos = best + len(hit)
                self._commit = self._pos
                return hit
            keep = 0 if self._eof else partial_suffix(buf[self._pos:], lits)
            end = len(buf) - keep
            if end > self._pos:
                out.append(buf[self._pos:end])
                self._emitted = True
                self._pos = end
                self._commit = end
            if self._eof:
                return ""
            yield
