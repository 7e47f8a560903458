"""Typing of XML-style tool-call parameter values by the tool's JSON schema."""

from __future__ import annotations

import ast
import json
from typing import Any


def param_types(tools: list[dict] | None) -> dict[str, dict[str, str]]:
    """{function name: {parameter name: JSON-schema type}} from an OpenAI `tools` list."""
    out: dict[str, dict[str, str]] = {}
    for tool in tools or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        props = (fn.get("parameters") or {}).get("properties") or {}
        types: dict[str, str] = {}
        if isinstance(props, dict):
            for pname, spec in props.items():
                t = spec.get("type") if isinstance(spec, dict) else None
                if isinstance(t, list):  # e.g. ["string", "null"]
                    t = next((x for x in t if x != "null"), None)
                if isinstance(t, str):
                    types[pname] = t
                elif isinstance(spec, dict) and ("anyOf" in spec or "oneOf" in spec or "enum" in spec):
                    types[pname] = "any"
        out[fn["name"]] = types
    return out


def _loose(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return value


def convert(value: str, typ: str | None) -> Any:
    """The parameter value the model wrote as text, converted to the schema type when it fits."""
    if typ == "string":
        return value
    v = value.strip()
    if typ == "integer":
        try:
            return int(v)
        except ValueError:
            return value
    if typ == "number":
        try:
            f = float(v)
        except ValueError:
            return value
        if f != f or f in (float("inf"), float("-inf")):
            return value  # not representable in JSON
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    if typ == "boolean":
        low = v.lower()
        if low in ("true", "false"):
            return low == "true"
        return value
    if typ == "null":
        return None if v.lower() in ("null", "none", "") else value
    # object / array / any / unknown: structured if it parses as such, else the text itself
    out = _loose(v)
    if out is v:
        return value
    if typ in ("object", "array") and not isinstance(out, (dict, list)):
        return value
    if isinstance(out, float) and (out != out or out in (float("inf"), float("-inf"))):
        return value
    if isinstance(out, (set, tuple, bytes, complex)):
        return value
    return out


def dumps(value: Any) -> str:
    """JSON text of a converted value, as json.dumps(dict) would write it inside an object."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return json.dumps(str(value), ensure_ascii=False)
