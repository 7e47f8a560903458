"""Exact, faster encoding for byte-level BPE tokenizers: Python regex pre-tokenization plus a piece → ids cache.

HF `tokenizers` spends most of an encode in its Oniguruma pre-tokenizer. For the tokenizer shapes this module
fully understands (GPT-2 / Qwen2 / Llama-3 / SmolLM style byte-level BPE), `CachedBpeEncoder` reproduces the
pipeline in Python: split on added tokens, NFC, split with the same pattern compiled by the `regex` module (or a
stdlib `re` ASCII translation for ASCII text), map each piece to byte-level characters and look it up in a bounded
cache; a miss asks the HF BPE model itself (`model.tokenize`), so the merges are exact by construction. The ids
equal `hf.encode(text, add_special_tokens=False).ids`; `build_cached_encoder` returns None for anything else.

Character tables differ between Python's `unicodedata`, the `regex` module, Oniguruma and tokenizers' NFC for
code points newer than the oldest of them. A piece holding a character Python does not know (category Cn, or a
lone surrogate) sends its whole segment to HF, and text that is not NFC already is normalized by tokenizers
itself, so those texts stay exact too.
"""

from __future__ import annotations

import codecs
import json
import logging
import re
import unicodedata
from itertools import chain
from typing import Any, Callable, Iterable

import regex

from dynamo_mono.preprocess.byte_level import bytes_to_unicode

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 65536

# tokenizers' ByteLevel pre-tokenizer pattern (use_regex=true).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# The one case-insensitive construct accepted: Oniguruma folds case fully (`(?i:ss)` matches "ß") while `regex`
# folds simply, but no character folds to any of these strings, and the tests check every code point.
_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_GENERAL_CATEGORIES = frozenset(
    "L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc Cf Co Cs Cn".split()
)
_GC_ESCAPE = re.compile(r"\\([pP])\{([A-Za-z]+)\}")
_UNKNOWN_CATEGORIES = ("Cn", "Cs")

# A letter new in each Unicode version Python may carry. Oniguruma must know Python's newest letters, or a letter
# Python knows (so not guarded as Cn) could split differently; an unlisted version keeps the fast path ASCII-only.
_NEWEST_LETTER = {
    "14.0.0": "\u0870",  # ARABIC LETTER ALEF WITH ATTACHED FATHA
    "15.0.0": "\U00011f04",  # KAWI LETTER A
    "15.1.0": "\U0002ebf0",  # CJK UNIFIED IDEOGRAPH-2EBF0
    "16.0.0": "\U000105c0",  # TODHRI LETTER A
}

# The fixed text of the build-time self-check; the tokenizer's added tokens are spliced between its lines.
_SELF_CHECK_LINES = (
    "Hello, world! It's a test: we'll see, they're fine, I'd've said DON'T; she'S. ",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\r\n\n  indented\n\t\tcode();  \n",
    "numbers 0 7 42 1234567 3.14159 -1e10 ١٢٣ ½ ²",
    "café naïve résumé Ångström façade e\u0301 n\u0303 \u212b \u212a",
    "中文分词测试，日本語のテキスト、한국어 텍스트",
    "emoji 🚀🔥👍🏽 👨\u200d👩\u200d👧 flags 🇫🇷 ",
    "Ελληνικά русский текст עברית العربية हिन्दी ไทย",
    "symbols ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./ … «»",
    "\u00a0nbsp\u3000ideographic space\u2028line sep  \x0b\x0c\x1c end",
    "xxx   \n\n   ",
)


class _Unsafe(Exception):
    """A piece holds a character whose tables may differ between Python, `regex` and Oniguruma."""


_BYTE_CHARS = "".join(bytes_to_unicode())  # charmap decoding table: character b stands for byte b
_charmap_decode = codecs.charmap_decode
_is_normalized = unicodedata.is_normalized


# --- patterns ---------------------------------------------------------------------------------------------------
def pattern_is_portable(pattern: str) -> bool:
    """True when `pattern` uses only syntax that Oniguruma (Ruby syntax) and the `regex` module read the same way.

    Accepted: literals, classes without nesting / POSIX brackets / `&&`, `\\p{GC}` and `\\P{GC}` with a general
    category, `\\s \\S \\r \\n \\t \\f`, escaped punctuation, groups `(?: (?= (?! (?<= (?<! (?>`, quantifiers, and
    the contractions group. Refused: `^ $` (always multi-line in Oniguruma), `\\d \\w \\h` and the like (their
    meaning differs), inline flags, back-references and named groups."""
    p = pattern.replace(_CONTRACTIONS, "''")
    i, n, in_class = 0, len(p), False
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                return False
            e = p[i + 1]
            if e in "pP":
                m = _GC_ESCAPE.match(p, i)
                if m is None or m.group(2) not in _GENERAL_CATEGORIES:
                    return False
                i = m.end()
                continue
            if e not in "sSrntf" and not (e.isascii() and not e.isalnum()):
                return False
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            elif c == "[" or p.startswith("&&", i):
                return False
            i += 1
            continue
        if c == "[":
            i += 2 if p.startswith("^", i + 1) else 1
            if p.startswith("]", i):
                return False
            in_class = True
            continue
        if c in "^$":
            return False
        if c == "(" and p.startswith("?", i + 1):
            if not p.startswith((":", "=", "!", "<=", "<!", ">"), i + 2):
                return False
        i += 1
    return not in_class


def _ascii_members(category: str) -> str:
    """The ASCII characters of a general category as character-class content (runs as ranges: "A-Za-z")."""
    codes = [i for i in range(128) if unicodedata.category(chr(i)).startswith(category)]
    out: list[str] = []
    for i, c in enumerate(codes):
        if 0 < i < len(codes) - 1 and codes[i - 1] == c - 1 and codes[i + 1] == c + 1:
            if out[-1] != "-":
                out.append("-")
            continue
        out.append(re.escape(chr(c)))
    return "".join(out)


def ascii_pattern(pattern: str) -> str | None:
    """A stdlib-`re` pattern (compile with re.ASCII) that splits ASCII text exactly as `pattern` does, or None.

    For ASCII input `\\p{GC}` can only match the ASCII members of GC, and re.ASCII's `\\s` is exactly the six
    ASCII White_Space characters (without it `re` also counts \\x1c-\\x1f)."""
    out: list[str] = []
    pos, in_class, i, n = 0, False, 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            m = _GC_ESCAPE.match(pattern, i)
            if m is None:
                i += 2
                continue
            members = _ascii_members(m.group(2))
            out.append(pattern[pos:i])
            if in_class:
                if m.group(1) == "P" or not members:
                    return None
                out.append(members)
            elif m.group(1) == "p":
                out.append(f"[{members}]" if members else "(?!)")
            else:
                out.append(f"[^{members}]" if members else r"[\x00-\x7f]")
            pos = i = m.end()
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        i += 1
    out.append(pattern[pos:])
    translated = "".join(out)
    try:
        re.compile(translated, re.ASCII)
    except re.error:
        return None
    return translated


class _Splitter:
    """One Split(pattern, Isolated) step: matches and the gaps between them are the pieces; empty ones dropped."""

    __slots__ = ("_uni", "_ascii", "_findall_ok")

    def __init__(self, pattern: str) -> None:
        self._uni = regex.compile(pattern)
        asc = ascii_pattern(pattern)
        self._ascii = re.compile(asc, re.ASCII) if asc is not None else None
        self._findall_ok = self._uni.groups == 0  # findall returns groups, not matches, when there are any

    def split(self, text: str, is_ascii: bool) -> list[str]:
        rx = self._ascii if is_ascii and self._ascii is not None else self._uni
        if self._findall_ok:
            pieces = rx.findall(text)
            # Ordered, non-overlapping matches that add up to the text's length tile it: no gaps to add.
            if sum(map(len, pieces)) == len(text):
                return pieces
            if not pieces:  # e.g. a digits step on text without digits
                return [text]
        pieces = []
        prev = 0
        for m in rx.finditer(text):
            start, end = m.span()
            if start > prev:
                pieces.append(text[prev:start])
                prev = start
            if end > start:
                pieces.append(text[start:end])
                prev = end
        if prev < len(text):
            pieces.append(text[prev:])
        return pieces


# --- tokenizer shape --------------------------------------------------------------------------------------------
def _spec_of(hf: Any) -> dict[str, Any]:
    """The parts of tokenizer.json this module reads, taken from the components (no vocabulary serialization)."""
    model = hf.model
    return {
        "truncation": hf.truncation,
        "padding": hf.padding,
        "normalizer": json.loads(hf.normalizer.__getstate__()) if hf.normalizer is not None else None,
        "pre_tokenizer": json.loads(hf.pre_tokenizer.__getstate__()) if hf.pre_tokenizer is not None else None,
        "model": {
            "type": type(model).__name__,
            "dropout": getattr(model, "dropout", None),
            "byte_fallback": getattr(model, "byte_fallback", False),
            "continuing_subword_prefix": getattr(model, "continuing_subword_prefix", None),
            "end_of_word_suffix": getattr(model, "end_of_word_suffix", None),
        },
        "added_tokens": [
            {"id": i, "content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip, "single_word": t.single_word,
             "normalized": t.normalized, "special": t.special}
            for i, t in sorted(hf.get_added_tokens_decoder().items())
        ],
    }


def _steps_of(pre: Any) -> list[str] | None:
    """The Split patterns, in order, of a supported pre-tokenizer (ending with its ByteLevel step), or None."""
    if not isinstance(pre, dict):
        return None
    items = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    if not isinstance(items, list) or not items:
        return None
    patterns: list[str] = []
    for item in items[:-1]:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "Split":
            pat = item.get("pattern") or {}
            if item.get("behavior") != "Isolated" or item.get("invert"):
                return None
            if isinstance(pat.get("Regex"), str):
                patterns.append(pat["Regex"])
            elif isinstance(pat.get("String"), str) and pat["String"]:
                patterns.append(regex.escape(pat["String"]))
            else:
                return None
        elif kind == "Digits":
            # tokenizers uses char::is_numeric, i.e. general category N.
            patterns.append(r"\p{N}" if item.get("individual_digits") else r"\p{N}+")
        else:
            return None
    last = items[-1]
    if not isinstance(last, dict) or last.get("type") != "ByteLevel" or last.get("add_prefix_space", True):
        return None
    if last.get("use_regex", True):
        patterns.append(GPT2_PATTERN)
    return patterns


def unsupported_reason(spec: dict[str, Any], hf: Any | None = None) -> str | None:
    """Why the tokenizer described by `spec` (tokenizer.json, parsed) is outside this module's shapes, or None."""
    if spec.get("truncation") is not None or spec.get("padding") is not None:
        return "truncation or padding is configured"
    if hf is not None and getattr(hf, "encode_special_tokens", False):
        return "encode_special_tokens is set"
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        return f"normalizer {norm.get('type')}"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model {model.get('type')}"
    if model.get("dropout") or model.get("byte_fallback"):
        return "BPE dropout or byte_fallback"
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "BPE subword prefix or suffix"
    steps = _steps_of(spec.get("pre_tokenizer"))
    if steps is None:
        return "pre-tokenizer is not [Split/Digits...,] ByteLevel(add_prefix_space=false)"
    for pattern in steps:
        if not pattern_is_portable(pattern):
            return f"pattern not portable to the regex module: {pattern!r}"
    contents: set[str] = set()
    for tok in spec.get("added_tokens") or []:
        if tok.get("lstrip") or tok.get("rstrip") or tok.get("single_word"):
            return f"added token {tok.get('content')!r} has lstrip/rstrip/single_word"
        content = tok.get("content")
        if not isinstance(content, str) or not content or content in contents:
            return f"added token {content!r} is empty or duplicated"
        contents.add(content)
    return None


def _oniguruma_knows_python_letters() -> bool:
    """Whether Oniguruma's tables are at least as new as Python's (see _NEWEST_LETTER)."""
    letter = _NEWEST_LETTER.get(unicodedata.unidata_version)
    if letter is None:
        return False
    from tokenizers import Regex, pre_tokenizers

    # "removed" drops what matches: a letter leaves nothing behind.
    return pre_tokenizers.Split(Regex(r"\p{L}"), "removed").pre_tokenize_str(letter) == []


# --- the encoder ------------------------------------------------------------------------------------------------
class _PieceCache(dict):
    """piece → tuple of ids. A miss asks the BPE model and stores the answer; when full, the oldest half goes
    (dicts keep insertion order)."""

    __slots__ = ("_tokenize", "maxsize")

    def __init__(self, model: Any, maxsize: int) -> None:
        super().__init__()
        self._tokenize = model.tokenize
        self.maxsize = maxsize

    def __missing__(self, piece: str) -> tuple[int, ...]:
        if not piece.isascii():
            category = unicodedata.category
            for ch in piece:
                if category(ch) in _UNKNOWN_CATEGORIES:
                    raise _Unsafe
        ids = tuple([t.id for t in self._tokenize(_charmap_decode(piece.encode("utf-8"), "strict", _BYTE_CHARS)[0])])
        if len(self) >= self.maxsize:
            for key in list(self)[: max(1, len(self) // 2)]:
                self.pop(key, None)  # pop: another thread may have evicted it already
        self[piece] = ids
        return ids


def _alternation(tokens: Iterable[str]) -> re.Pattern[str] | None:
    """Leftmost-longest split on literal tokens (as tokenizers' aho-corasick): one capture group, longest first."""
    ordered = sorted(tokens, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, ordered)) + ")") if ordered else None


class CachedBpeEncoder:
    """Encodes text to the ids `hf.encode(text, add_special_tokens=False)` gives. Build with `build_cached_encoder`."""

    def __init__(self, hf: Any, spec: dict[str, Any], *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        steps = _steps_of(spec.get("pre_tokenizer"))
        if steps is None or cache_size < 1:
            raise ValueError("unsupported tokenizer shape or cache size")
        self._hf = hf
        self._nfc = (spec.get("normalizer") or {}).get("type") == "NFC"
        if self._nfc and hf.normalizer is None:
            raise ValueError("spec says NFC but the tokenizer has no normalizer")
        self._normalize: Callable[[str], str] = hf.normalizer.normalize_str if self._nfc else str
        self._splitters = [_Splitter(p) for p in steps]
        self._split_one = self._splitters[0].split if len(self._splitters) == 1 else None
        self.ascii_only = not _oniguruma_knows_python_letters()
        # tokenizers matches non-normalized added tokens on the raw text first, then normalized ones (their content
        # normalized too) on each normalized gap.
        raw: dict[str, int] = {}
        norm: dict[str, int] = {}
        for tok in spec.get("added_tokens") or []:
            if tok.get("normalized"):
                norm[self._normalize(tok["content"])] = tok["id"]
            else:
                raw[tok["content"]] = tok["id"]
        self._raw_ids, self._raw_re = raw, _alternation(raw)
        self._norm_ids, self._norm_re = norm, _alternation(norm)
        self.cache = _PieceCache(hf.model, cache_size)
        self._lookup = self.cache.__getitem__

    def _pieces(self, text: str) -> list[str]:
        is_ascii = text.isascii()
        if not is_ascii and self.ascii_only:
            raise _Unsafe
        if self._split_one is not None:
            return self._split_one(text, is_ascii)
        pieces = [text]
        for step in self._splitters:
            pieces = [p for piece in pieces for p in step.split(piece, piece.isascii())]
        return pieces

    def _encode_segment(self, raw: str, out: list[int]) -> None:
        """A stretch between non-normalized added tokens: tokenizers handles each one independently."""
        start = len(out)
        try:
            text = raw
            # tokenizers' NFC tables are older than Python's (0.23 neither composes Unicode 13's Dives Akuru nor
            # reorders Unicode 14's Arabic marks). So Python only decides that text is NFC already, which tokenizers
            # then leaves as is too (tested on every code point); other text goes through tokenizers' own NFC.
            if self._nfc and not raw.isascii() and not _is_normalized("NFC", raw):
                text = self._normalize(raw)
            if self._norm_re is None:
                out += chain.from_iterable(map(self._lookup, self._pieces(text)))
                return
            parts = self._norm_re.split(text)
            for i, part in enumerate(parts):
                if i & 1:
                    out.append(self._norm_ids[part])
                elif part:
                    out += chain.from_iterable(map(self._lookup, self._pieces(part)))
        except _Unsafe:
            del out[start:]
            out += self._hf.encode(raw, add_special_tokens=False).ids

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, added tokens included, no post-processor tokens."""
        out: list[int] = []
        if self._raw_re is None:
            if text:
                self._encode_segment(text, out)
            return out
        parts = self._raw_re.split(text)
        ids = self._raw_ids
        for i, part in enumerate(parts):
            if i & 1:
                out.append(ids[part])
            elif part:
                self._encode_segment(part, out)
        return out

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """`encode` of each text (Python, holding the GIL: no gain from a thread)."""
        return [self.encode(t) for t in texts]


def _self_check_text(spec: dict[str, Any]) -> str:
    tokens = [t["content"] for t in spec.get("added_tokens") or []][:32]
    lines = list(_SELF_CHECK_LINES)
    out = []
    for i, line in enumerate(lines * max(1, -(-len(tokens) // len(lines)))):
        out.append(line)
        if i < len(tokens):
            out.append(tokens[i])
            out.append(" " + tokens[i] + tokens[i])  # adjacent tokens, a space before one
    return "".join(out)


def build_cached_encoder(hf: Any, spec: dict[str, Any] | None = None, *,
                         cache_size: int = DEFAULT_CACHE_SIZE) -> CachedBpeEncoder | None:
    """A `CachedBpeEncoder` for `hf` (a `tokenizers.Tokenizer`), or None when its shape is not fully understood
    or the self-check on a fixed multilingual text disagrees with `hf.encode`.

    `spec` is tokenizer.json parsed (`json.loads(hf.to_str())`); without it the relevant parts are read from
    `hf`'s components, which avoids serializing the vocabulary."""
    try:
        spec = spec if spec is not None else _spec_of(hf)
        reason = unsupported_reason(spec, hf)
        if reason is None:
            enc = CachedBpeEncoder(hf, spec, cache_size=cache_size)
            text = _self_check_text(spec)
            lines = text.splitlines(keepends=True)
            for sample in (text, *lines):
                if enc.encode(sample) != hf.encode(sample, add_special_tokens=False).ids:
                    reason = f"self-check mismatch on {sample[:60]!r}"
                    break
            else:
                enc.cache.clear()
                return enc
    except Exception as exc:  # an unexpected component shape: keep HF
        reason = f"{type(exc).__name__}: {exc}"
    log.info("fast BPE encoding not used, HF tokenizers encodes: %s", reason)
    return None
