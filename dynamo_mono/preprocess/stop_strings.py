"""Stop strings on streamed text: emit what is safe, hold back a possible partial match, cut at the first stop."""

from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """Finds the stop string that completes first in a stream of text pieces (vLLM's rule).

    The winner is the stop that ends earliest in the text; stops ending at the same place are ranked by their
    order in the list. The result does not depend on how the text is split into pieces. Output never contains
    the matched stop; only the longest suffix that could still grow into a stop string is held back.
    """

    __slots__ = ("_stops", "_first_chars", "_max_prefix", "_held", "_floor", "matched")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self._first_chars = frozenset(s[0] for s in self._stops)
        self._max_prefix = max((len(s) - 1 for s in self._stops), default=0)
        self._held = ""
        self._floor = 0  # a stop must end past this many characters of the held text (see skip)
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
        if stop is not None:
            # any stop still partial at the end of s would end after this one
            self._held, self._floor = "", 0
            self.matched = stop
            return s[:cut], stop
        pending = self._pending_start(s)
        self._held = s[pending:]
        self._floor = max(0, self._floor - pending)
        return s[:pending], None

    def skip(self, text: str) -> str:
        """Like feed, but no stop may end inside `text` (vLLM's min_tokens): a stop can only start in it.

        Returns the text safe to emit now; what could begin a stop is held as by feed.
        """
        if self.matched is not None:
            return ""
        s = self._held + text if self._held else text
        if not s:
            return ""
        pending = self._pending_start(s)
        self._held = s[pending:]
        self._floor = len(self._held)
        return s[:pending]

    def flush(self) -> str:
        """Release held-back text at the end of the stream; it never holds a complete stop (feed cuts at once)."""
        s, self._held, self._floor = self._held, "", 0
        return "" if self.matched is not None else s

    def _earliest(self, s: str) -> tuple[int, str | None]:
        """(start, stop) of the stop that ends first in s past the floor (first listed on a tie); (len, None)."""
        floor = self._floor
        best_end, start, found = len(s) + 1, len(s), None
        for stop in self._stops:
            n = len(stop)
            # only occurrences ending past the floor and strictly before the best end so far
            i = s.find(stop, max(0, floor - n + 1), best_end - 1)
            if i != -1:
                best_end, start, found = i + n, i, stop
        return start, found

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
