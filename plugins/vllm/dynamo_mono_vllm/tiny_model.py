"""Builds a tiny random-weight LlamaForCausalLM directory (embedded ChatML tokenizer) for tests and benchmarks.

No download: the tokenizer files are copied from dynamo_mono/assets/tiny-chatml and the weights come
from a fixed seed, so the directory is the same on every machine. Needs torch + transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def tiny_chatml_dir() -> Path:
    """The embedded tiny ChatML tokenizer directory shipped with dynamo-mono."""
    from dynamo_mono.api import TINY_CHATML_DIR

    return TINY_CHATML_DIR


def build_tiny_llama(out_dir: str | os.PathLike, *, seed: int = 0, hidden_size: int = 128, layers: int = 2,
                     heads: int = 4, max_position_embeddings: int = 2048, matryoshka: bool = False) -> Path:
    """Write config, safetensors weights and tokenizer files to out_dir (idempotent); return the path.

    matryoshka: mark the config `is_matryoshka` (what vLLM reads), so that served as an embedding model
    (vLLM's pooling runner: last-token pooling, normalised) it accepts `dimensions`."""
    out = Path(out_dir)
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    src = tiny_chatml_dir()
    qwen = json.loads((src / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=qwen["vocab_size"], hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings, rms_norm_eps=1e-6, rope_theta=10000.0,
        bos_token_id=qwen["bos_token_id"], eos_token_id=qwen["eos_token_id"], tie_word_embeddings=False,
        torch_dtype="float32",
        **({"is_matryoshka": True} if matryoshka else {}),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    import sys

    print(build_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
