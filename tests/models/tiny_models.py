"""Tiny model directories made at test time (a tokenizer unlike the embedded one), for multi-model tests."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from dynamo_mono.assets.make_tiny_chatml import CHAT_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?",
           "system user assistant tool", "a tiny tokenizer for tests"] * 50


def small_bpe_model_dir(out: Path, vocab_size: int = 400, context: int = 2048) -> Path:
    """A byte-level BPE ChatML model directory with its own small vocabulary (tokenizer.json + configs)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>", "bos_token": None,
        "added_tokens_decoder": {str(ids[t]): {"content": t, "special": True} for t in SPECIALS}}))
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": context,
                                                 "eos_token_id": ids["<|im_end|>"],
                                                 "vocab_size": tok.get_vocab_size()}))
    return out
