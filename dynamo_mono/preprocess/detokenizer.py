"""Incremental detokenization: token ids in, newly completed text out, never half a UTF-8 character."""

from __future__ import annotations

from codecs import utf_8_decode as _utf8_decode
from typing import Sequence

from dynamo_mono.preprocess.tokenizer import Tokenizer

try:  # tokenizers >= 0.21
    from tokenizers.decoders import DecodeStream as _DecodeStream
except ImportError:  # pragma: no cover - depends on the installed tokenizers
    _DecodeStream = None

# Tokens of context kept before the unread ones, so decoders that strip a leading space at the start of a
# sequence (SentencePiece / Metaspace) still produce the space mid-stream (vLLM uses the same window).
_CONTEXT = 5
_REPLACEMENT = "\ufffd"
# Emitted ids are dropped (all but the context) once the kept list grows past this, bounding memory.
_COMPACT_AT = 1024


class IncrementalDetokenizer:
    """Streaming decode of one sequence. `add` returns only text that later tokens cannot change."""

    __slots__ = ("_tok", "_hf", "_skip", "_ids", "_prefix", "_read", "_stream", "_table", "_drop", "_pending")

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        skip_special_tokens: bool = True,
        prompt_tail: Sequence[int] = (),
        use_decode_stream: bool | None = None,
    ) -> None:
        self._tok = tokenizer
        self._hf = tokenizer.hf
        self._skip = skip_special_tokens
        tail = list(prompt_tail)[-_CONTEXT:]
        self._ids: list[int] = tail  # prompt tail + every generated id
        self._prefix = 0  # window start (fallback path)
        self._read = len(tail)  # ids before this index have been emitted as text
        # Byte-level BPE (the common case) needs no tokenizer call per token: bytes from a table, then an
        # incremental UTF-8 decoder, which holds an incomplete character until its last byte arrives.
        # use_decode_stream=True / False forces tokenizers' DecodeStream / the offset window instead.
        table = tokenizer.byte_table() if use_decode_stream is None else None
        if use_decode_stream is None:
            use_decode_stream = _DecodeStream is not None and table is None
        self._stream = _DecodeStream(ids=tail, skip_special_tokens=skip_special_tokens) if use_decode_stream else None
        self._table = table[0] if table is not None else None
        self._drop = table[1] if table is not None and skip_special_tokens else frozenset()
        self._pending = b""  # bytes of an incomplete UTF-8 character (table path)

    def add(self, token_ids: Sequence[int]) -> str:
        """Append generated ids; return the text they complete (possibly "")."""
        n = len(token_ids)
        if n == 0:
            return ""
        table = self._table
        if table is not None:
            drop = self._drop
            try:
                if n == 1:
                    t = token_ids[0]
                    if t in drop:
                        return ""
                    data = self._pending + table[t] if self._pending else table[t]
                else:
                    data = self._pending + b"".join([table[t] for t in token_ids if t not in drop])
            except IndexError:  # an id outside the vocabulary: leave it to the tokenizer's own decoder
                self._table = None
                held = _utf8_decode(self._pending, "replace", True)[0]
                self._pending = b""
                return held + self._tok.decode(token_ids, self._skip)
            text, used = _utf8_decode(data, "replace", False)  # keeps an incomplete trailing character
            self._pending = data[used:] if used < len(data) else b""
            return text
        ids = self._ids
        ids.extend(token_ids)
        stream = self._stream
        if stream is not None:
            try:
                text = stream.step(self._hf, token_ids[0] if n == 1 else list(token_ids))
            except Exception:
                # DecodeStream refuses windows whose text is not an extension of its prefix; the offset
                # window below handles those, continuing from what has been emitted so far.
                self._stream = None
                self._prefix = max(0, self._read - _CONTEXT)
                return self._window_step()
            if text is None:
                return ""
            self._read = len(ids)
            if self._read > _COMPACT_AT:
                self._compact(self._read - _CONTEXT)
            return text
        return self._window_step()

    def _compact(self, cut: int) -> None:
        del self._ids[:cut]
        self._read -= cut
        self._prefix = max(0, self._prefix - cut)

    def _window_step(self) -> str:
        ids = self._ids
        decode = self._hf.decode
        prefix_text = decode(ids[self._prefix : self._read], skip_special_tokens=self._skip)
        new_text = decode(ids[self._prefix :], skip_special_tokens=self._skip)
        if len(new_text) > len(prefix_text) and not new_text.endswith(_REPLACEMENT):
            self._prefix = self._read
            self._read = len(ids)
            if self._prefix > _COMPACT_AT:
                self._compact(self._prefix)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text of ids still held back at the end of the stream (an invalid byte sequence becomes U+FFFD)."""
        if self._table is not None:
            text = _utf8_decode(self._pending, "replace", True)[0] if self._pending else ""
            self._pending = b""
            return text
        ids = self._ids
        if self._read >= len(ids):
            return ""
        start = max(0, self._read - _CONTEXT) if self._stream is not None else self._prefix
        decode = self._hf.decode
        prefix_text = decode(ids[start : self._read], skip_special_tokens=self._skip)
        new_text = decode(ids[start:], skip_special_tokens=self._skip)
        self._read = len(ids)
        self._prefix = start
        self._stream = None
        return new_text[len(prefix_text) :]
