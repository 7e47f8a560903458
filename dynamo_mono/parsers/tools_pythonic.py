"""Pythonic tool calls (Llama 3.2/4, Olmo): `[get_weather(city="SF"), get_time()]`, parsed with `ast`."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from dynamo_mono.parsers.incremental import Gen, Malformed, StreamToolParser

_HEAD = re.compile(r"\s*[A-Za-z_][\w.]*\s*\(")
_HEAD_PARTIAL = re.compile(r"\s*(?:[A-Za-z_][\w.]*\s*)?\Z")


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):  # JSON spellings
        return {"true": True, "false": False, "null": None}[node.id]
    v = ast.literal_eval(node)
    if isinstance(v, (set, bytes, complex)):
        raise ValueError("not JSON")
    if isinstance(v, tuple):
        return list(v)
    return v


def _func_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _func_name(node.value) + "." + node.attr
    raise ValueError("not a function name")


class PythonicToolParser(StreamToolParser):
    """A Python list of calls with keyword arguments at the start of the output, or after `<|python_start|>`."""

    markers = ("<|python_start|>",)
    lead_markers = ("[",)

    def region(self) -> Gen:
        tagged = self.marker != "["
        if tagged:
            c = yield from self._ws()
            if c != "[":
                raise Malformed
        start = self._pos if tagged else 0
        p = start + 1
        depth = 1
        quote = ""
        checked = False
        while depth:
            buf = self._buf
            n = len(buf)
            if not checked:
                head = buf[p:]
                if _HEAD.match(head) or head.lstrip().startswith("]"):
                    checked = True
                elif not _HEAD_PARTIAL.match(head) or self._eof:
                    raise Malformed
                else:
                    yield
                    continue
            while p < n and depth:
                ch = buf[p]
                if quote:
                    if ch == "\\":
                        if p + 1 >= n:
                            break
                        p += 2
                        continue
                    if ch == quote:
                        quote = ""
                elif ch in "\"'":
                    quote = ch
                elif ch in "([{":
                    depth += 1
                elif ch in ")]}":
                    depth -= 1
                p += 1
            if depth:
                yield from self._more()
        text = self._buf[start:p]
        self._pos = p
        calls = self._calls_of(text)
        for name, args in calls:
            self._open_call(name)
            self._args(json.dumps(args, ensure_ascii=False))
        if tagged:
            end = self._pos
            yield from self._ws()
            if not (yield from self._starts("<|python_end|>")):
                self._pos = end
        self._done_call()

    @staticmethod
    def _calls_of(text: str) -> list[tuple[str, dict]]:
        try:
            tree = ast.parse(text, mode="eval")
            if not isinstance(tree.body, ast.List):
                raise ValueError("not a list")
            out = []
            for call in tree.body.elts:
                if not isinstance(call, ast.Call) or call.args:
                    raise ValueError("not a keyword call")
                args = {}
                for kw in call.keywords:
                    if kw.arg is None:
                        raise ValueError("**kwargs")
                    args[kw.arg] = _value(kw.value)
                out.append((_func_name(call.func), args))
            return out
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise Malformed from None
