"""Checking an adapter source before any engine sees it: file:// URI or local path, peft files, rank, base model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from dynamo_mono.serving.errors import InvalidRequest

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass(frozen=True, slots=True)
class AdapterFiles:
    """A checked adapter directory and the facts of its adapter_config.json the server acts on."""

    path: str
    rank: int
    base_model: str | None


def local_path(source: str) -> str:
    """The local directory a source names: `file:///abs/dir` or a plain path. Remote schemes are refused (the
    server has no guarded fetcher for adapter downloads; fetch the files onto the host first)."""
    if "://" in source:
        u = urlparse(source)
        if u.scheme != "file":
            raise InvalidRequest(f"LoRA source scheme '{u.scheme}' is not supported: use file:///path or a local "
                                 "path (download remote adapters onto the server host first)", param="source")
        if u.netloc not in ("", "localhost"):
            raise InvalidRequest(f"file URI with host '{u.netloc}' is not a local path", param="source")
        source = unquote(u.path)
    if not source:
        raise InvalidRequest("LoRA source is empty", param="source")
    return os.path.abspath(os.path.expanduser(source))


def check_adapter(source: str, *, max_rank: int = 0, served_base: tuple[str, ...] = ()) -> AdapterFiles:
    """InvalidRequest with the reason unless source is a peft adapter directory this server can serve;
    `served_base` holds the base model's names (served name, model path): the adapter's
    base_model_name_or_path, when it has one, must name the same model."""
    path = local_path(source)
    if not os.path.isdir(path):
        raise InvalidRequest(f"LoRA source {path} is not a directory", param="source")
    cfg_path = os.path.join(path, "adapter_config.json")
    if not os.path.isfile(cfg_path):
        raise InvalidRequest(f"LoRA source {path} is not an adapter: no adapter_config.json", param="source")
    if not any(os.path.isfile(os.path.join(path, w)) for w in WEIGHT_FILES):
        raise InvalidRequest(f"LoRA source {path} is not an adapter: no {' or '.join(WEIGHT_FILES)}",
                             param="source")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"LoRA source {path}: unreadable adapter_config.json ({exc})", param="source") from None
    if not isinstance(cfg, dict):
        raise InvalidRequest(f"LoRA source {path}: adapter_config.json is not an object", param="source")
    peft_type = cfg.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise InvalidRequest(f"LoRA source {path}: peft_type {peft_type!r} is not LORA", param="source")
    rank = cfg.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise InvalidRequest(f"LoRA source {path}: adapter_config.json has no positive integer rank 'r'",
                             param="source")
    if max_rank and rank > max_rank:
        raise InvalidRequest(f"LoRA adapter rank {rank} exceeds --max-lora-rank {max_rank}", param="source")
    base = cfg.get("base_model_name_or_path") or None
    if base is not None and served_base and not any(_same_model(str(base), s) for s in served_base if s):
        raise InvalidRequest(f"LoRA adapter was trained for base model '{base}', but this server serves "
                             f"'{served_base[0]}'", param="source")
    return AdapterFiles(path, rank, str(base) if base is not None else None)


def _same_model(a: str, b: str) -> bool:
    """Names or paths of one model: equal, or equal last path components (a hub id vs a local copy of it)."""
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.rsplit("/", 1)[-1] == b.rsplit("/", 1)[-1]
