"""Builds a tiny random-weight Qwen2-VL directory (vision tower + Qwen2 text model) for tests and benchmarks.

No download: the tokenizer is dynamo-mono's embedded tiny ChatML one plus Qwen2-VL's media tokens
(<|vision_start|> <|vision_end|> <|image_pad|> <|video_pad|>, and the audio ones of the embedded tokenizer's later
versions, so both spell the same ids), the weights come from a fixed seed. The image processor is told to keep
images between 56x56 and 28x28x64 pixels, so an image takes 4 to 64 placeholder tokens: the engine and its
profiling run stay cheap on CPU. Needs torch + transformers (and torchvision where vLLM serves it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

# Qwen3-VL / Qwen3-Omni names, in the order the embedded tiny ChatML tokenizer adds them.
MEDIA_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|audio_start|>",
                "<|audio_end|>", "<|audio_pad|>")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64


def _processor_config(kind: str, min_pixels: int, max_pixels: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "do_resize": True, "do_rescale": True, "do_normalize": True, "do_convert_rgb": True,
        "rescale_factor": 1 / 255, "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "min_pixels": min_pixels, "max_pixels": max_pixels,
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "processor_class": "Qwen2VLProcessor",
    }
    if kind == "image":
        cfg["image_processor_type"] = "Qwen2VLImageProcessor"
    else:
        cfg.update(video_processor_type="Qwen2VLVideoProcessor", do_sample_frames=False, cap_pixels_per_frame=False)
    return cfg


def build_tiny_qwen2_vl(out_dir: str | os.PathLike, *, seed: int = 0, hidden_size: int = 128, layers: int = 2,
                        heads: int = 4, vision_dim: int = 64, vision_depth: int = 2,
                        min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
                        max_position_embeddings: int = 4096) -> Path:
    """Write config, safetensors weights, tokenizer and image / video processor configs to out_dir (idempotent).

    Text model: hidden_size, `layers` layers, `heads` heads of hidden_size / heads (>= 32 for vLLM's CPU attention),
    M-RoPE sections summing to half a head. Vision tower: `vision_depth` blocks of width vision_dim, patch 14,
    2x2 merge, 2-frame temporal patches (Qwen2-VL's)."""
    out = Path(out_dir)
    if (out / "model.safetensors").exists() and (out / "preprocessor_config.json").exists():
        return out
    import torch
    from tokenizers import AddedToken, Tokenizer
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from dynamo_mono.api import TINY_CHATML_DIR

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok = Tokenizer.from_file(str(TINY_CHATML_DIR / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MEDIA_TOKENS])
    tok.save(str(tmp / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in MEDIA_TOKENS}
    tok_cfg = json.loads((TINY_CHATML_DIR / "tokenizer_config.json").read_text())
    for t in MEDIA_TOKENS:
        tok_cfg["added_tokens_decoder"][str(ids[t])] = {"content": t, "lstrip": False, "normalized": False,
                                                        "rstrip": False, "single_word": False, "special": True}
    tok_cfg["chat_template"] = _media_template(tok_cfg["chat_template"])
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
    shutil.copyfile(TINY_CHATML_DIR / "generation_config.json", tmp / "generation_config.json")
    base = json.loads((TINY_CHATML_DIR / "config.json").read_text())
    head_dim = hidden_size // heads
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=tok.get_vocab_size(), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=max(1, heads // 2), max_position_embeddings=max_position_embeddings,
                         rms_norm_eps=1e-6, bos_token_id=base["bos_token_id"], eos_token_id=base["eos_token_id"],
                         rope_scaling={"type": "mrope", "mrope_section": _mrope_sections(head_dim),
                                       "rope_theta": 10000.0},
                         tie_word_embeddings=False),
        vision_config=dict(depth=vision_depth, embed_dim=vision_dim, hidden_size=hidden_size, num_heads=2,
                           mlp_ratio=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).to(torch.float32)
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "preprocessor_config.json").write_text(
        json.dumps(_processor_config("image", min_pixels, max_pixels), indent=1))
    (tmp / "video_preprocessor_config.json").write_text(
        json.dumps(_processor_config("video", min_pixels, max_pixels), indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


_TEXT_PART = """{%- elif part is mapping and part.type == 'text' -%}
                {{- part.text -}}"""
_MEDIA_PARTS = """
            {%- elif part is mapping and part.type in ['image', 'image_url'] -%}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
            {%- elif part is mapping and part.type in ['video', 'video_url'] -%}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"""


def _media_template(template: str) -> str:
    """The ChatML template rendering image / video parts as Qwen2-VL does (one placeholder each), whichever
    version of the embedded template it starts from."""
    if "<|image_pad|>" in template:
        return template
    if _TEXT_PART not in template:
        raise RuntimeError("the embedded ChatML template changed: cannot add media parts to it")
    return template.replace(_TEXT_PART, _TEXT_PART + _MEDIA_PARTS, 1)


def _mrope_sections(head_dim: int) -> list[int]:
    """Qwen2-VL splits half a head's rotary dims into (temporal, height, width) sections: 16, 24, 24 of 64."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


if __name__ == "__main__":
    import sys

    print(build_tiny_qwen2_vl(sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen2-vl"))
