"""A model's tokenizer and config files, sent by a worker so the server can serve a model it did not load (a media
model sends none: the server needs no tokenizer for it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dynamo_mono.engine import MEDIA_KINDS
from dynamo_mono.preprocess.model_dir import ModelInfo, load_model_dir
from dynamo_mono.transports.messages import ModelFiles

# The files load_model_dir reads (tokenizer, its config, generation and model config); weights never travel.
MODEL_FILE_NAMES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json",
                    "special_tokens_map.json")


def pack_model_files(info: ModelInfo, kind: str) -> ModelFiles:
    """The files of a loaded model directory that the server needs to tokenize and template for it; for a media
    kind just the kind (its ModelInfo may have no tokenizer, and the server needs none)."""
    if kind in MEDIA_KINDS:
        return ModelFiles(kind=kind, files={}, chat_template=None, max_model_len=0)
    d = Path(info.path)
    files = {name: (d / name).read_bytes() for name in MODEL_FILE_NAMES if (d / name).is_file()}
    return ModelFiles(kind=kind, files=files, chat_template=info.tokenizer.chat_template,
                      max_model_len=info.max_model_len)


def unpack_model_files(mf: ModelFiles, name: str) -> ModelInfo:
    """Load a ModelFiles as a model directory (in a private temporary directory, removed afterwards); a media
    model's is a ModelInfo without tokenizer or template. ValueError on files that do not belong."""
    if mf.kind in MEDIA_KINDS:
        return media_model_info(mf, name)
    with tempfile.TemporaryDirectory(prefix="dynamo-mono-model-") as tmp:
        for fname, data in mf.files.items():
            if fname not in MODEL_FILE_NAMES:  # a name is a plain file name we asked for, never a path
                raise ValueError(f"unexpected model file {fname!r}")
            Path(tmp, fname).write_bytes(data)
        template = None
        if mf.chat_template is not None:
            template = os.path.join(tmp, "chat_template.jinja")
            Path(template).write_text(mf.chat_template, encoding="utf-8")
        info = load_model_dir(tmp, served_model_name=name, chat_template_path=template,
                              max_model_len=mf.max_model_len)
    info.path = f"(from worker) {name}"
    return info


def media_model_info(mf: ModelFiles, name: str) -> ModelInfo:
    """The ModelInfo of a media model a worker brings: a name and nothing to tokenize with."""
    if mf.files or mf.chat_template is not None or mf.max_model_len:
        raise ValueError(f"a {mf.kind} model takes no tokenizer files, chat template or context length "
                         f"(got files {sorted(mf.files)}, template {mf.chat_template is not None}, "
                         f"max_model_len {mf.max_model_len})")
    return ModelInfo(path=f"(from worker) {name}", name=name, tokenizer=None, chat_template=None, max_model_len=0,
                     eos_token_ids=[], reasoning_parser=None, tool_call_parser=None)
