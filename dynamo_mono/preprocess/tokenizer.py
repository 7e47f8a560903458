"""Tokenizer: a HF `tokenizers` tokenizer.json plus the facts from tokenizer_config / generation_config / config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from tokenizers import Tokenizer as _HFTokenizer

from dynamo_mono.preprocess.fast_bpe import CachedBpeEncoder, build_cached_encoder


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from path, or {} when the file is absent."""
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _token_content(value: Any) -> str | None:
    """tokenizer_config stores tokens as a string or as a serialized AddedToken {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _select_chat_template(value: Any) -> str | None:
    """A template string, or the "default" entry of a list of named templates."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get("name") == "default" and isinstance(item.get("template"), str):
                return item["template"]
    return None


def _as_id_list(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class Tokenizer:
    """Encode / decode text with a model's tokenizer; carries its special tokens, EOS ids and chat template."""

    def __init__(
        self,
        hf: _HFTokenizer,
        *,
        config: dict[str, Any] | None = None,
        generation_config: dict[str, Any] | None = None,
        model_config: dict[str, Any] | None = None,
        chat_template: str | None = None,
        fast_encode: bool = True,
    ) -> None:
        cfg = config or {}
        self._tok = hf
        # Exact Python fast path for byte-level BPE shapes it understands (None: HF encodes everything).
        self._fast: CachedBpeEncoder | None = build_cached_encoder(hf) if fast_encode else None
        self.config = cfg
        self.vocab_size: int = hf.get_vocab_size(with_added_tokens=True)
        self.bos_token: str | None = _token_content(cfg.get("bos_token"))
        self.eos_token: str | None = _token_content(cfg.get("eos_token"))

        special = {i for i, tok in hf.get_added_tokens_decoder().items() if tok.special}
        for key, entry in (cfg.get("added_tokens_decoder") or {}).items():
            if isinstance(entry, dict) and entry.get("special") and str(key).isdigit():
                special.add(int(key))
        self.special_ids: frozenset[int] = frozenset(special)

        self.eos_token_ids: list[int] = self._find_eos_ids(generation_config or {}, model_config or {})
        if chat_template is None:
            chat_template = _select_chat_template(cfg.get("chat_template"))
        self.chat_template: str | None = chat_template

    def _find_eos_ids(self, generation_config: dict[str, Any], model_config: dict[str, Any]) -> list[int]:
        for source in (generation_config, model_config, model_config.get("text_config") or {}):
            ids = _as_id_list(source.get("eos_token_id"))
            if ids:
                return list(dict.fromkeys(ids))
        if self.eos_token is not None:
            eos = self._tok.token_to_id(self.eos_token)
            if eos is not None:
                return [eos]
        return []

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        """Load tokenizer.json and, when present, tokenizer_config.json, generation_config.json, config.json
        and chat_template.jinja from a model directory."""
        d = Path(path)
        hf = _HFTokenizer.from_file(str(d / "tokenizer.json"))
        template_file = d / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
        return cls(
            hf,
            config=read_json(d / "tokenizer_config.json"),
            generation_config=read_json(d / "generation_config.json"),
            model_config=read_json(d / "config.json"),
            chat_template=template,
        )

    def byte_table(self) -> tuple[list[bytes], frozenset[int]] | None:
        """Token id → bytes table for byte-level BPE vocabularies (built once), else None."""
        try:
            return self._byte_table
        except AttributeError:
            from dynamo_mono.preprocess.byte_level import byte_table

            self._byte_table = byte_table(self._tok)
            return self._byte_table

    @property
    def hf(self) -> _HFTokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._tok

    @property
    def fast_encoder(self) -> CachedBpeEncoder | None:
        """The cached byte-level BPE encoder behind `encode` / `encode_batch`, or None when HF encodes."""
        return self._fast

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if self._fast is not None and not add_special_tokens:
            return self._fast.encode(text)
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], *, release_gil: bool = False) -> list[list[int]]:
        """Ids of each text, without post-processor tokens. `release_gil=True` always uses HF's encode_batch,
        which releases the GIL while it runs (the fast path is Python and holds it): for use on a worker thread."""
        if self._fast is not None and not release_gil:
            return self._fast.encode_batch(texts)
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids if isinstance(ids, list) else list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, tok: str) -> int | None:
        return self._tok.token_to_id(tok)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos_token_ids={self.eos_token_ids})"
