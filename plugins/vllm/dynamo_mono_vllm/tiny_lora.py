"""Builds a tiny LoRA adapter with peft for a (tiny) Llama directory: tests and demos of LoRA serving.

peft initialises lora_B to zero (an adapter that changes nothing); here both A and B are random (fixed seed), B
scaled so that greedy output differs from the base model's without collapsing to one repeated token. Needs torch,
transformers and peft.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def build_tiny_lora(base_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 1, rank: int = 8,
                    alpha: int = 16, b_scale: float = 0.05,
                    targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """Write adapter_config.json + adapter_model.safetensors for base_dir's model to out_dir (idempotent)."""
    out = Path(out_dir)
    if (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                        init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, b_scale)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    peft_model.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m dynamo_mono_vllm.tiny_lora BASE_MODEL_DIR OUT_DIR")
    print(build_tiny_lora(sys.argv[1], sys.argv[2]))
