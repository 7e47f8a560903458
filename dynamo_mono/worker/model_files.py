"""A model's tokenizer and config files, sent by a worker so the server can serve a model it did not load."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dynamo_mono.preprocess.model_dir import ModelInfo, load_model_dir
from dynamo_mono.transports.messages import ModelFiles

# The files load_model_dir reads (tokenizer, its config, generation and model config); weights never travel.
MODEL_FILE_NAMES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json",
                    "special_tokens_map.json")


def pack_model_files(info: ModelInfo, kind: str) -> ModelFiles:
    """The files of a loaded model directory that the server needs to tokenize and template for it."""
    d = Path(info.path)
    files = {name: (d / name).read_bytes() for name in MODEL_FILE_NAMES if (d / name).is_file()}
    return ModelFiles(kind=kind, files=files, chat_template=info.tokenizer.chat_template,
                      max_model_len=info.max_model_len)


def unpack_model_files(mf: ModelFiles, name: str) -> ModelInfo:
    """Load a ModelFiles as a model directory (in a private temporary directory, removed afterwards)."""
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
