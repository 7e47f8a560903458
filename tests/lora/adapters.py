"""Tiny peft-format adapters for tests: adapter_config.json + adapter_model.safetensors (numpy, a few floats)."""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import save_file


def make_adapter(root: str, name: str, *, rank: int = 8, base: str | None = "tiny-chatml",
                 weights: bool = True, config: bool = True) -> str:
    """A directory holding a LoRA adapter of `rank` for `base`; returns its path."""
    path = os.path.join(root, name)
    os.makedirs(path, exist_ok=True)
    if config:
        cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"],
               "base_model_name_or_path": base, "task_type": "CAUSAL_LM"}
        with open(os.path.join(path, "adapter_config.json"), "w") as f:
            json.dump(cfg, f)
    if weights:
        tensors = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((rank, 4), np.float32),
                   "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((4, rank), np.float32)}
        save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    return path
