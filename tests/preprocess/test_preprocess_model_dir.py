"""Model directory loading, tokenizer facts, and the shipped tiny ChatML asset (reproducible byte for byte)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynamo_mono.assets import TINY_CHATML_DIR
from dynamo_mono.config import ConfigError
from dynamo_mono.preprocess import Tokenizer, load_model_dir

ASSET_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]


def _model_dir(tmp_path: Path, *, tokenizer_config: dict | None = None, config: dict | None = None,
               generation_config: dict | None = None) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    shutil.copy(TINY_CHATML_DIR / "tokenizer.json", d / "tokenizer.json")
    for name, data in (("tokenizer_config.json", tokenizer_config), ("config.json", config),
                       ("generation_config.json", generation_config)):
        if data is not None:
            (d / name).write_text(json.dumps(data), encoding="utf-8")
    return d


def test_embedded_model_loads_fast_and_is_complete() -> None:
    t0 = time.perf_counter()
    info = load_model_dir(None)
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    print(f"\nembedded tiny-chatml load: {elapsed_ms:.1f} ms")
    tok = info.tokenizer
    assert info.name == "tiny-chatml"
    assert info.max_model_len == 8192
    im_end, eot = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    assert info.eos_token_ids == tok.eos_token_ids == [im_end, eot]
    assert tok.eos_token == "<|im_end|>"
    media = {tok.token_to_id(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
                                          "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>")}
    assert None not in media
    assert tok.special_ids == frozenset({im_end, eot, tok.token_to_id("<|im_start|>"), *media})
    for plain in ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"):
        i = tok.token_to_id(plain)
        assert i is not None and i not in tok.special_ids and tok.id_to_token(i) == plain
    assert 2000 <= tok.vocab_size <= 4096
    assert (info.reasoning_parser, info.tool_call_parser) == ("qwen3", "hermes")
    assert info.chat_template is not None
    assert load_model_dir(None, served_model_name="mine").name == "mine"


def test_tokenizer_round_trip_and_batch() -> None:
    tok = load_model_dir(None).tokenizer
    texts = ["Hello, world!", "東京 café 🚀", '{"name": "get_weather"}', "<|im_start|>user\nhi<|im_end|>"]
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    for text, ids in zip(texts, batch):
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.encode("<|im_start|>")== [tok.token_to_id("<|im_start|>")]  # special tokens are atomic
    assert tok.decode(tok.encode("<|im_start|>user<|im_end|>")) == "user"
    assert tok.id_to_token(10**6) is None and tok.token_to_id("no such token") is None


def test_shipped_asset_is_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo_mono.assets.make_tiny_chatml", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ASSET_FILES
    for name in ASSET_FILES:
        assert (out / name).read_bytes() == (TINY_CHATML_DIR / name).read_bytes(), name


def test_missing_directory_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--model .*nope: not a directory$"):
        load_model_dir(str(tmp_path / "nope"))


def test_missing_tokenizer_json_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--model .*: no tokenizer.json"):
        load_model_dir(str(tmp_path))


def test_malformed_tokenizer_json_is_one_line_config_error(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_model_dir(str(tmp_path))
    assert str(e.value).startswith(f"--model {tmp_path}: cannot load tokenizer") and "\n" not in str(e.value)


def test_unknown_context_length_asks_for_flag(tmp_path: Path) -> None:
    d = _model_dir(tmp_path, tokenizer_config={"model_max_length": int(1e30)})
    with pytest.raises(ConfigError, match="--max-model-len"):
        load_model_dir(str(d))
    assert load_model_dir(str(d), max_model_len=1234).max_model_len == 1234


def test_context_length_sources(tmp_path: Path) -> None:
    d = _model_dir(tmp_path, tokenizer_config={"model_max_length": 4096}, config={"n_positions": 2048})
    assert load_model_dir(str(d)).max_model_len == 2048
    (d / "config.json").write_text("{}", encoding="utf-8")
    assert load_model_dir(str(d)).max_model_len == 4096
    (d / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 999}}), encoding="utf-8")
    assert load_model_dir(str(d)).max_model_len == 999


def test_eos_ids_precedence(tmp_path: Path) -> None:
    d = _model_dir(tmp_path, tokenizer_config={"eos_token": {"content": "<|endoftext|>"}, "model_max_length": 64},
                   config={"eos_token_id": 1}, generation_config={"eos_token_id": [2, 0, 2]})
    info = load_model_dir(str(d))
    assert info.eos_token_ids == [2, 0]
    (d / "generation_config.json").unlink()
    assert Tokenizer.from_dir(d).eos_token_ids == [1]
    (d / "config.json").unlink()
    tok = Tokenizer.from_dir(d)
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_ids == [0]


def test_chat_template_sources(tmp_path: Path) -> None:
    named = [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "DEFAULT {{ bos_token }}"}]
    d = _model_dir(tmp_path, tokenizer_config={"chat_template": named, "bos_token": "<s>", "model_max_length": 64})
    assert load_model_dir(str(d) + "/").name == "model"  # default name: the directory's name
    info = load_model_dir(str(d), served_model_name="m")
    assert info.name == "m" and info.chat_template is not None
    assert info.chat_template.render([]) == "DEFAULT <s>"
    (d / "chat_template.jinja").write_text("FILE", encoding="utf-8")
    assert load_model_dir(str(d)).chat_template.render([]) == "FILE"
    custom = tmp_path / "custom.jinja"
    custom.write_text("CUSTOM {{ messages | length }}", encoding="utf-8")
    assert load_model_dir(str(d), chat_template_path=str(custom)).chat_template.render([1]) == "CUSTOM 1"
    with pytest.raises(ConfigError, match="^--chat-template"):
        load_model_dir(str(d), chat_template_path=str(tmp_path / "missing.jinja"))


def test_no_template_and_no_parsers(tmp_path: Path) -> None:
    d = _model_dir(tmp_path, tokenizer_config={"model_max_length": 64})
    (d / "tokenizer.json").write_text(
        (TINY_CHATML_DIR / "tokenizer.json").read_text(encoding="utf-8").replace("<think>", "<thonk>"), encoding="utf-8"
    )
    info = load_model_dir(str(d))
    assert info.chat_template is None
    assert (info.reasoning_parser, info.tool_call_parser) == (None, None)


def test_bad_template_syntax_is_config_error(tmp_path: Path) -> None:
    d = _model_dir(tmp_path, tokenizer_config={"chat_template": "{% if %}", "model_max_length": 64})
    with pytest.raises(ConfigError, match=r"^--model .*: chat template syntax error at line 1: "):
        load_model_dir(str(d))
    bad = tmp_path / "bad.jinja"
    bad.write_text("ok\n{{ x + }}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--chat-template .*bad.jinja: chat template syntax error at line 2"):
        load_model_dir(str(d), chat_template_path=str(bad))
