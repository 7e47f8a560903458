"""Tool-call parsers with XML-style parameters typed by the tool schema: qwen3_coder, minimax_m2, glm45."""

from __future__ import annotations

from dynamo_mono.parsers.incremental import Gen, Malformed, StreamToolParser
from dynamo_mono.parsers.schema import convert, dumps


class _XmlParams(StreamToolParser):
    """Arguments are built as JSON one parameter at a time: `{"a": 1`, `, "b": "x"`, then `}`."""

    def _param(self, name: str, key: str, value: str, first: bool) -> None:
        typ = self.types.get(name, {}).get(key)
        frag = ("{" if first else ", ") + dumps(key) + ": " + dumps(convert(value, typ))
        self._args(frag)

    def _close_args(self, n: int) -> None:
        self._args("}" if n else "{}")


def _strip_nl(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


class Qwen3CoderToolParser(_XmlParams):
    """Qwen3-Coder: `<tool_call><function=name><parameter=p>value</parameter></function></tool_call>`."""

    markers = ("<tool_call>", "<function=")

    def region(self) -> Gen:
        tagged = self.marker == "<tool_call>"
        if tagged:
            yield from self._ws()
            yield from self._expect("<function=")
        name, _ = yield from self._until(">")
        name = name.strip()
        if not name or "<" in name or "\n" in name:
            raise Malformed
        self._open_call(name)
        n = 0
        while True:
            yield from self._ws()
            if (yield from self._starts("</function>")):
                break
            yield from self._expect("<parameter=")
            key, _ = yield from self._until(">")
            value, _ = yield from self._until("</parameter>")
            self._param(name, key.strip(), _strip_nl(value), n == 0)
            n += 1
        self._close_args(n)
        if tagged:
            yield from self._ws()
            yield from self._expect("</tool_call>")
        self._done_call()


def _attr(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


class MiniMaxM2ToolParser(_XmlParams):
    """MiniMax-M2: `<minimax:tool_call><invoke name="f"><parameter name="p">v</parameter></invoke></minimax:tool_call>`."""

    markers = ("<minimax:tool_call>",)

    def region(self) -> Gen:
        calls = 0
        while True:
            yield from self._ws()
            if (yield from self._starts("</minimax:tool_call>")):
                if not calls:
                    raise Malformed
                return
            yield from self._expect("<invoke name=")
            raw, _ = yield from self._until(">")
            name = _attr(raw)
            if not name or "<" in name:
                raise Malformed
            self._open_call(name)
            n = 0
            while True:
                yield from self._ws()
                if (yield from self._starts("</invoke>")):
                    break
                yield from self._expect("<parameter name=")
                key, _ = yield from self._until(">")
                value, _ = yield from self._until("</parameter>")
                self._param(name, _attr(key), _strip_nl(value), n == 0)
                n += 1
            self._close_args(n)
            self._done_call()
            calls += 1


class Glm45ToolParser(_XmlParams):
    """GLM-4.5/4.6: `<tool_call>name\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n</tool_call>`."""

    markers = ("<tool_call>",)

    def region(self) -> Gen:
        name, hit = yield from self._until("\n", "<arg_key>", "</tool_call>")
        name = name.strip()
        if not name or "<" in name or "{" in name:
            raise Malformed
        self._pos -= len(hit) if hit != "\n" else 0
        self._open_call(name)
        n = 0
        while True:
            yield from self._ws()
            if (yield from self._starts("</tool_call>")):
                break
            yield from self._expect("<arg_key>")
            key, _ = yield from self._until("</arg_key>")
            yield from self._ws()
            yield from self._expect("<arg_value>")
            value, _ = yield from self._until("</arg_value>")
            self._param(name, key.strip(), value, n == 0)
            n += 1
        self._close_args(n)
        self._done_call()
