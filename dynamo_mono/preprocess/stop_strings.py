"""Stop strings on streamed text: emit what is safe, hold back a possible partial match, cut at the first stop."""

from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """Finds the earliest occurrence of any stop string in a stream of text pieces.

    Output never contains a stop string. Only the longest suffix that could still grow into a stop string
    is held back; when a complete stop is found but an earlier partial one is still open, the text from the
    partial one on is held until it resolves, so the cut is always at the earliest occurrence.
    """

    __slots__ = ("_stops", "_first_chars", "_max_prefix", "_held", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self._first_chars = frozenset(s[0] for s in self._stops)
        self._max_prefix = max((len(s) - 1 for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text, once found

    def feed(self, text: str) -> tuple[str, str | None]:
        """Return (text safe to emit now, the stop string just matched or None). After a match: ("", None)."""
        if self.matched is not None:
            return "", None
        if not self._held:
            if not text:
                return "", None
            for c in self._first_chars:
                if c in text:
                    break
            else:
                return text, None
            s = text
        else:
            s = self._held + text
        cut, stop = self._earliest(s)
        pending = self._pending_start(s)
        if stop is not None and pending >= cut:
            self._held = ""
            self.matched = stop
            return s[:cut], stop
        # No complete match, or an earlier partial match may still win: hold from its start.
        self._held = s[pending:]
        return s[:pending], None

    def flush(self) -> str:
        """Release held-back text at the end of the stream (cut at a complete stop inside it, if any)."""
        s, self._held = self._held, ""
        if self.matched is not None or not s:
            return ""
        cut, stop = self._earliest(s)
        if stop is not None:
            self.matched = stop
            return s[:cut]
        return s

    def _earliest(self, s: str) -> tuple[int, str | None]:
        best, found = len(s) + 1, None
        for stop in self._stops:
            i = s.find(stop, 0, best + len(stop) - 1)
            if i != -1 and i < best:
                best, found = i, stop
        return best, found

    def _pending_start(self, s: str) -> int:
        """Start of the longest suffix of s that is a proper prefix of some stop string (len(s) if none)."""
        n = len(s)
        first, stops = self._first_chars, self._stops
        for i in range(max(0, n - self._max_prefix), n):
            if s[i] in first:
                tail = s[i:]
                # a proper prefix of a stop string may still grow into it (linear in the stops' size)
                if any(len(stop) > len(tail) and stop.startswith(tail) for stop in stops):
                    return i
        return n
