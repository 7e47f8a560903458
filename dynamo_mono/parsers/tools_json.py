"""Tool-call parsers whose arguments are JSON: hermes, llama3_json, mistral, deepseek_v3, kimi_k2, harmony."""

from __future__ import annotations

import re

from dynamo_mono.parsers.incremental import Gen, Malformed, StreamToolParser


class HermesToolParser(StreamToolParser):
    """`<tool_call>{"name": …, "arguments": {…}}</tool_call>`, one tag pair per call (Hermes, Qwen2.5/3)."""

    markers = ("<tool_call>",)

    def region(self) -> Gen:
        yield from self._json_call()
        yield from self._ws()
        yield from self._expect("</tool_call>")
        self._done_call()


class Llama3JsonToolParser(StreamToolParser):
    """Llama 3.x JSON calls: optional `<|python_tag|>`, `{"name": …, "parameters": {…}}`, several joined by `;`.

    Without the tag a call is recognised only at the very start of the output.
    """

    markers = ("<|python_tag|>",)
    lead_markers = ("{",)

    def region(self) -> Gen:
        if self.marker == "{":
            self._pos = 0  # the brace belongs to the call
        while True:
            yield from self._json_call()
            end = self._pos
            c = yield from self._ws()
            if c == ";":
                self._pos += 1
                self._done_call()
                continue
            if c == "<" and (yield from self._starts("<|eom_id|>")):
                self._done_call()
                return
            self._pos = end
            return


class MistralToolParser(StreamToolParser):
    """`[TOOL_CALLS][{"name": …, "arguments": {…}}, …]` and the v11+ `[TOOL_CALLS]name[ARGS]{…}`."""

    markers = ("[TOOL_CALLS]",)

    def region(self) -> Gen:
        c = yield from self._ws()
        if c == "[":
            self._pos += 1
            first = True
            while True:
                c = yield from self._ws()
                if c == "]":
                    self._pos += 1
                    return
                if not first:
                    yield from self._expect(",")
                first = False
                yield from self._json_call()
        name, hit = yield from self._until("[ARGS]", "[CALL_ID]", "[TOOL_CALLS]", "{", "\n")
        name = name.strip()
        if not name or not _IDENT.fullmatch(name) or hit not in ("[ARGS]", "[CALL_ID]"):
            raise Malformed
        if hit == "[CALL_ID]":
            yield from self._until("[ARGS]")
        self._open_call(name)
        yield from self._json_raw(True)
        self._done_call()


_IDENT = re.compile(r"[A-Za-z0-9_.\-]+")


class DeepSeekV3ToolParser(StreamToolParser):
    """DeepSeek V3: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>name\\n```json\\n{…}\\n```<｜tool▁call▁end｜>…`.

    Also accepts the V3.1 call form `<｜tool▁call▁begin｜>name<｜tool▁sep｜>{…}<｜tool▁call▁end｜>`.
    """

    markers = ("<｜tool▁calls▁begin｜>",)
    CALL, SEP, CALL_END, END = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"

    def region(self) -> Gen:
        n = 0
        while True:
            c = yield from self._ws()
            if not c and n:
                return
            if (yield from self._starts(self.END)):
                return
            yield from self._expect(self.CALL)
            kind, _ = yield from self._until(self.SEP)
            c = yield from self._ws()
            if c in "{[":  # V3.1: the name came before the separator
                self._open_call(kind.strip())
                yield from self._json_raw(True)
            else:
                name, _ = yield from self._until("\n")
                name = name.strip()
                if not name:
                    raise Malformed
                self._open_call(name)
                c = yield from self._ws()
                fenced = yield from self._starts("```")
                if fenced:
                    yield from self._until("\n")
                yield from self._json_raw(True)
                if fenced:
                    yield from self._ws()
                    yield from self._expect("```")
            yield from self._ws()
            yield from self._expect(self.CALL_END)
            self._done_call()
            n += 1


class KimiK2ToolParser(StreamToolParser):
    """Kimi K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>{…}<|tool_call_end|>…`."""

    markers = ("<|tool_calls_section_begin|>",)

    def region(self) -> Gen:
        n = 0
        while True:
            c = yield from self._ws()
            if not c and n:
                return
            if (yield from self._starts("<|tool_calls_section_end|>")):
                return
            yield from self._expect("<|tool_call_begin|>")
            ident, _ = yield from self._until("<|tool_call_argument_begin|>")
            name = ident.strip()
            if name.startswith("functions."):
                name = name[len("functions."):]
            name = name.rsplit(":", 1)[0] if ":" in name else name
            if not name:
                raise Malformed
            self._open_call(name)
            yield from self._json_raw(True)
            yield from self._ws()
            yield from self._expect("<|tool_call_end|>")
            self._done_call()
            n += 1


_HARMONY_TO = re.compile(r"to=(?:functions\.)?([^\s<]+)")


class HarmonyToolParser(StreamToolParser):
    """gpt-oss harmony: `<|channel|>commentary to=functions.name <|constrain|>json<|message|>{…}<|call|>`.

    Messages without a recipient go out as their body text (headers and terminators dropped).
    """

    markers = ("<|start|>", "<|channel|>")

    def region(self) -> Gen:
        header, _ = yield from self._until("<|message|>")
        m = _HARMONY_TO.search(header)
        if m is None:
            hit = yield from self._content_until("<|end|>", "<|return|>", "<|call|>", "<|start|>", "<|channel|>")
            if hit in ("<|start|>", "<|channel|>"):  # next message begins: leave its marker
                self._pos -= len(hit)
            return
        self._open_call(m.group(1))
        yield from self._json_raw(True)
        end = self._pos
        c = yield from self._ws()
        if c and ((yield from self._starts("<|call|>")) or (yield from self._starts("<|end|>"))):
            self._done_call()
            return
        self._pos = end
        self._done_call()
