"""Load a model directory (or the embedded tiny ChatML model): tokenizer, chat template, context length, parsers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo_mono.assets import TINY_CHATML_DIR
from dynamo_mono.config import ConfigError
from dynamo_mono.preprocess.chat_template import ChatTemplate, TemplateError
from dynamo_mono.preprocess.tokenizer import Tokenizer, read_json

EMBEDDED_MODEL_NAME = "tiny-chatml"
EMBEDDED_MAX_MODEL_LEN = 8192
# Sentinel transformers writes when a tokenizer has no real limit (int(1e30)); ignore anything that large.
_NO_LIMIT = 10**12
_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length")


@dataclass
class ModelInfo:
    """Everything the frontend needs to know about the served model's text side."""

    path: str
    name: str
    tokenizer: Tokenizer
    chat_template: ChatTemplate | None
    max_model_len: int
    eos_token_ids: list[int]
    reasoning_parser: str | None
    tool_call_parser: str | None


def _context_length(model_config: dict[str, Any], tokenizer_config: dict[str, Any]) -> int | None:
    for cfg in (model_config, model_config.get("text_config") or {}):
        for key in _LEN_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
                return value
    value = tokenizer_config.get("model_max_length")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
        return int(value)
    return None


def _guess_parsers(model_config: dict[str, Any], tokenizer: Tokenizer) -> tuple[str | None, str | None]:
    """Default reasoning / tool-call parser names (Dynamo's names) from what the model's files show."""
    model_type = str(model_config.get("model_type") or "").lower()
    template = tokenizer.chat_template or ""
    reasoning = None
    if "deepseek" in model_type and "<think>" in template:
        reasoning = "deepseek_r1"
    elif tokenizer.token_to_id("<think>") is not None and tokenizer.token_to_id("</think>") is not None:
        reasoning = "qwen3"
    tool = "hermes" if "<tool_call>" in template else None
    return reasoning, tool


def load_model_dir(
    path: str | None,
    *,
    served_model_name: str | None = None,
    chat_template_path: str | None = None,
    max_model_len: int | None = None,
) -> ModelInfo:
    """Load the model directory at `path` (None: the embedded tiny ChatML model). ConfigError on bad input."""
    embedded = path is None
    d = TINY_CHATML_DIR if embedded else Path(path).expanduser()
    if not d.is_dir():
        raise ConfigError(f"--model {path}: not a directory")
    if not (d / "tokenizer.json").is_file():
        raise ConfigError(f"--model {path}: no tokenizer.json in the directory (only HF fast tokenizers are supported)")
    try:
        tokenizer = Tokenizer.from_dir(d)
        model_config = read_json(d / "config.json")
    except Exception as e:  # OSError, bad JSON, or the exception tokenizers raises for a malformed file
        raise ConfigError(f"--model {path}: cannot load tokenizer: {_one_line(e)}") from None

    template_source = tokenizer.chat_template
    if chat_template_path is not None:
        try:
            template_source = Path(chat_template_path).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"--chat-template {chat_template_path}: {e.strerror or e}") from None
        tokenizer.chat_template = template_source
    chat_template = None
    if template_source:
        try:
            chat_template = ChatTemplate(template_source, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
        except TemplateError as e:
            source = f"--chat-template {chat_template_path}" if chat_template_path else f"--model {path}"
            raise ConfigError(f"{source}: chat template {e}") from None

    if max_model_len is None:
        max_model_len = _context_length(model_config, tokenizer.config)
    if max_model_len is None:
        if not embedded:
            raise ConfigError(
                f"--model {path}: no context length in config.json or tokenizer_config.json; pass --max-model-len"
            )
        max_model_len = EMBEDDED_MAX_MODEL_LEN
    reasoning, tool = _guess_parsers(model_config, tokenizer)
    name = served_model_name or (EMBEDDED_MODEL_NAME if embedded else d.resolve().name or str(path))
    return ModelInfo(
        path=str(d),
        name=name,
        tokenizer=tokenizer,
        chat_template=chat_template,
        max_model_len=max_model_len,
        eos_token_ids=list(tokenizer.eos_token_ids),
        reasoning_parser=reasoning,
        tool_call_parser=tool,
    )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
