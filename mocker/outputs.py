"""What the mocker generates: deterministic token streams for the --mocker-output modes.

Modes: ``random`` (pseudo-random ordinary tokens, EOS at a seeded length in [16, 256]),
``echo`` (the prompt's text re-tokenized), ``reasoning[:PARSER]`` (a short reasoning block and an
answer in that reasoning parser's format), ``tool-calls[:PARSER]`` (calls to the request's tools,
arguments derived from each tool's JSON schema, in that tool-call parser's format) and
``script:FILE`` (scripted responses). Tool-call mode on a request without tools answers in plain text.

Script files: ``*.json`` holds one entry or a list of entries, ``*.jsonl`` one entry per line, any
other file is a single plain-text response. An entry is a string (the response text) or an object
``{"match": "substring of the prompt text" (optional), "text": "...", "reasoning": "..." (optional),
"tool_calls": [{"name": "...", "arguments": {...}}] (optional)}``. The first entry whose ``match``
occurs in the prompt text wins; otherwise one of the entries without ``match`` is picked by the
request's seed (or request id), so a given request always gets the same entry.

Determinism: the token at output position i depends only on (seed or request_id, choice_index,
original prompt, i), so a migrated request (prompt + k generated tokens) continues exactly where
the fault-free run would have been.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import EngineRequest

CHUNK = 256
_M64 = (1 << 64) - 1
_EOS_MIN, _EOS_MAX = 16, 256


def mix64(x: int) -> int:
    """splitmix64 finaliser on a Python int (for per-request, not per-token, values)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix_array(x: np.ndarray) -> np.ndarray:
    """splitmix64 over a uint64 array (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def request_seed(request: EngineRequest, original_prompt: list[int]) -> int:
    """The 64-bit seed of one request's output stream."""
    key = request.sampling.seed if request.sampling.seed is not None else request.request_id
    head = f"{type(key).__name__}:{key}|{request.choice_index}|".encode()
    return xxhash.xxh3_64_intdigest(head + array("I", original_prompt).tobytes())


@dataclass
class ScriptEntry:
    """One scripted response."""

    text: str = ""
    reasoning: str | None = None
    tool_calls: list[tuple[str, dict]] | None = None
    match: str | None = None


@dataclass
class OutputMode:
    """A parsed --mocker-output value."""

    kind: str  # random | echo | reasoning | tool-calls | script
    parser: str | None = None
    script: list[ScriptEntry] = field(default_factory=list)


def parse_output_mode(spec: str) -> OutputMode:
    """Parse `--mocker-output`; ConfigError with a one-line message on nonsense."""
    spec = (spec or "random").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind in ("random", "echo"):
        if arg:
            raise ConfigError(f"invalid --mocker-output={spec!r}: {kind} takes no argument")
        return OutputMode(kind)
    if kind in ("reasoning", "tool-calls", "toolcalls", "tools"):
        return OutputMode("reasoning" if kind == "reasoning" else "tool-calls", arg.strip() or None)
    if kind == "script":
        if not arg:
            raise ConfigError("invalid --mocker-output=script: expected script:FILE")
        return OutputMode("script", None, load_script(arg))
    raise ConfigError(
        f"invalid --mocker-output={spec!r}: expected random, echo, reasoning[:PARSER], tool-calls[:PARSER] or script:FILE")


def load_script(path: str) -> list[ScriptEntry]:
    """Read a script file (see module docstring); ConfigError naming the file and line on bad input."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read mocker script {path}: {exc.strerror or exc}") from None
    suffix = p.suffix.lower()
    items: list[tuple[str, Any]] = []
    if suffix == ".json":
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"mocker script {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        items = [(f"{path} entry {i}", d) for i, d in enumerate(data if isinstance(data, list) else [data])]
    elif suffix == ".jsonl":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((f"{path} line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"mocker script {path} line {n}: invalid JSON: {exc.msg}") from None
    else:
        items = [(path, raw)]
    entries = [_entry(where, d) for where, d in items]
    if not entries:
        raise ConfigError(f"mocker script {path} has no entries")
    return entries


def _entry(where: str, d: Any) -> ScriptEntry:
    if isinstance(d, str):
        return ScriptEntry(text=d)
    if not isinstance(d, dict):
        raise ConfigError(f"mocker script {where}: expected a string or an object")
    text = d.get("text", d.get("content", ""))
    if not isinstance(text, str):
        raise ConfigError(f"mocker script {where}: field 'text' must be a string")
    reasoning = d.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        raise ConfigError(f"mocker script {where}: field 'reasoning' must be a string")
    match = d.get("match")
    if match is not None and not isinstance(match, str):
        raise ConfigError(f"mocker script {where}: field 'match' must be a string")
    calls = None
    if d.get("tool_calls") is not None:
        if not isinstance(d["tool_calls"], list):
            raise ConfigError(f"mocker script {where}: field 'tool_calls' must be a list")
        calls = []
        for c in d["tool_calls"]:
            if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                raise ConfigError(f"mocker script {where}: each tool call needs a string 'name'")
            args = c.get("arguments", {})
            if not isinstance(args, dict):
                raise ConfigError(f"mocker script {where}: tool call 'arguments' must be an object")
            calls.append((c["name"], args))
    return ScriptEntry(text=text, reasoning=reasoning, tool_calls=calls, match=match)


# --- text generation ----------------------------------------------------------------------------

_THOUGHTS = [
    "The user is asking a question. Let me think about it step by step.",
    "First I should restate the problem, then check the key facts.",
    "Let me consider the simplest explanation before the complicated ones.",
    "I will work through this carefully and verify the result.",
]
_ANSWERS = [
    "Here is my answer: the result is {n}.",
    "The answer is {n}.",
    "After checking, I conclude it is {n}.",
    "Done. The value you want is {n}.",
]
_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def example_value(schema: Any, name: str, seed: int) -> Any:
    """A deterministic value that satisfies the common parts of a JSON schema."""
    if not isinstance(schema, dict):
        return f"{name}_{seed % 1000}"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][seed % len(schema["enum"])]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_value(schema[key][0], name, seed)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else "string"
    if typ == "object":
        props = schema.get("properties") or {}
        return {k: example_value(v, k, mix64(seed ^ i)) for i, (k, v) in enumerate(props.items())}
    if typ == "array":
        n = max(1, int(schema.get("minItems", 1)))
        return [example_value(schema.get("items", {}), name, mix64(seed + i)) for i in range(n)]
    if typ == "integer":
        lo = int(schema.get("minimum", 0))
        hi = int(schema.get("maximum", lo + 99))
        return lo + seed % (hi - lo + 1) if hi >= lo else lo
    if typ == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 100.0))
        return round(lo + (seed % 1000) / 1000 * (hi - lo), 2)
    if typ == "boolean":
        return seed % 2 == 0
    if typ == "null":
        return None
    return f"{_WORDS[seed % len(_WORDS)]}_{name}"


def _tool_fn(tool: dict) -> tuple[str, dict]:
    fn = tool.get("function", tool)
    return str(fn.get("name", "tool")), fn.get("parameters") or fn.get("input_schema") or {}


def build_text(mode: OutputMode, request: EngineRequest, seed: int, prompt_text: str,
               reasoning_parser: str, tool_parser: str) -> str:
    """The full response text of a text mode (echo / reasoning / tool-calls / script)."""
    if mode.kind == "echo":
        return prompt_text
    if mode.kind == "reasoning":
        from dynamo_mono.parsers.formats import format_reasoning

        thought = _THOUGHTS[seed % len(_THOUGHTS)]
        answer = _ANSWERS[(seed >> 8) % len(_ANSWERS)].format(n=(seed >> 16) % 100)
        return format_reasoning(mode.parser or reasoning_parser, thought, answer)
    if mode.kind == "tool-calls":
        tools = request.tools or []
        if not tools:
            return _ANSWERS[(seed >> 8) % len(_ANSWERS)].format(n=(seed >> 16) % 100)
        from dynamo_mono.parsers.formats import format_tool_calls

        wanted = request.tool_choice
        names = [_tool_fn(t)[0] for t in tools]
        if isinstance(wanted, dict):
            wanted = (wanted.get("function") or wanted).get("name")
        idx = names.index(wanted) if isinstance(wanted, str) and wanted in names else seed % len(tools)
        name, params = _tool_fn(tools[idx])
        return format_tool_calls(mode.parser or tool_parser, [(name, example_value(params, name, mix64(seed)))])
    if mode.kind == "script":
        entry = pick_entry(mode.script, prompt_text, seed)
        text = entry.text
        if entry.tool_calls:
            from dynamo_mono.parsers.formats import format_tool_calls

            text = format_tool_calls(tool_parser, entry.tool_calls, entry.text)
        if entry.reasoning is not None:
            from dynamo_mono.parsers.formats import format_reasoning

            text = format_reasoning(reasoning_parser, entry.reasoning, text)
        return text
    raise ValueError(f"not a text mode: {mode.kind}")


def pick_entry(entries: list[ScriptEntry], prompt_text: str, seed: int) -> ScriptEntry:
    """First entry whose match occurs in the prompt, else a seed-chosen entry without match."""
    for e in entries:
        if e.match is not None and e.match in prompt_text:
            return e
    pool = [e for e in entries if e.match is None] or entries
    return pool[seed % len(pool)]


class TokenSource:
    """Token at each absolute output position of one request, plus where EOS falls."""

    __slots__ = ("allowed", "n_allowed", "seed", "text", "eos_pos", "lo", "hi", "chunk")

    def __init__(self, allowed: np.ndarray, seed: int, text: list[int] | None, eos_pos: int | None) -> None:
        self.allowed = allowed
        self.n_allowed = np.uint64(len(allowed))
        self.seed = seed
        self.text = text
        self.eos_pos = eos_pos  # absolute position at which EOS is produced; None = never
        # The current window of precomputed tokens: positions lo..hi-1 are chunk[0..].
        self.chunk: list[int] = text if text is not None else []
        self.lo = 0
        self.hi = len(self.chunk)

    def token(self, pos: int) -> int:
        """Token at absolute output position pos (EOS handling is the caller's)."""
        if self.lo <= pos < self.hi:
            return self.chunk[pos - self.lo]
        text = self.text
        if text is not None and pos < len(text):
            self.chunk, self.lo, self.hi = text, 0, len(text)
            return text[pos]
        c = pos // CHUNK
        base = np.uint64(mix64(self.seed ^ (c * 0x9E3779B1)))
        x = _mix_array(np.arange(CHUNK, dtype=np.uint64) + base)
        self.chunk = array("q", self.allowed[x % self.n_allowed].tobytes())  # 8 bytes a token, not an int object
        self.lo = c * CHUNK
        self.hi = self.lo + CHUNK
        return self.chunk[pos - self.lo]

    def alternative(self, pos: int, exclude: set[int]) -> int:
        """A deterministic ordinary token other than those in exclude (stop ids suppressed by min_tokens)."""
        n = len(self.allowed)
        i = mix64(self.seed ^ pos) % n
        for _ in range(n):
            t = int(self.allowed[i])
            if t not in exclude:
                return t
            i = (i + 1) % n
        return int(self.allowed[0])


def eos_length(seed: int) -> int:
    """The seeded natural output length of random mode, in [16, 256]."""
    return _EOS_MIN + mix64(seed ^ 0xE0E0E0E0) % (_EOS_MAX - _EOS_MIN + 1)


def logprobs_for(token_id: int, pos: int, seed: int, n_top: int, allowed: np.ndarray) -> tuple[float, list]:
    """Deterministic (logprob, top list) for one sampled token: n_top entries, sampled first, descending."""
    h = mix64(seed ^ (pos * 0x5851F42D4C957F2D))
    lp = -((h % 1000) / 4000.0) - 0.001
    top: list[tuple[int, float]] = []
    if n_top > 0:
        top.append((token_id, lp))
        n = len(allowed)
        i = h % n
        seen = {token_id}
        cur = lp
        for _ in range(n):
            if len(top) >= n_top:
                break
            t = int(allowed[i])
            i = (i + 1) % n
            if t in seen:
                continue
            seen.add(t)
            cur -= 0.5 + ((h >> (len(top) % 48)) % 100) / 100.0
            top.append((t, cur))
    return lp, top


_ORDINARY_CACHE: dict[tuple[int, int], list[int]] = {}


def ordinary_token_ids(tokenizer: Any, vocab: int, specials: set[int]) -> list[int]:
    """Token ids random text is drawn from: not special or added, and decoding alone to printable text.

    Byte-level vocabularies hold tokens that are fragments of multi-byte characters or control bytes;
    emitting those would make the mocker's text look broken (U+FFFD) in a way no real model's does.
    """
    key = (id(tokenizer), vocab)
    cached = _ORDINARY_CACHE.get(key)
    if cached is not None:
        return cached
    candidates = [i for i in range(vocab) if i not in specials]
    hf = getattr(tokenizer, "hf", None)
    if hf is not None:
        added = set(hf.get_added_tokens_decoder())
        candidates = [i for i in candidates if i not in added]
        texts = hf.decode_batch([[i] for i in candidates], skip_special_tokens=False)
    elif tokenizer is not None and hasattr(tokenizer, "decode"):
        texts = [tokenizer.decode([i]) for i in candidates]
    else:
        texts = None
    if texts is not None:
        picked = [i for i, t in zip(candidates, texts) if t and "\ufffd" not in t and (t.isprintable() or set(t) <= {" ", "\n", "\t"})]
        candidates = picked or candidates
    _ORDINARY_CACHE[key] = candidates
    return candidates
