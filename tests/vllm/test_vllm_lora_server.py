"""LoRA adapters on vLLM behind `dynamo-mono serve` (one instance, KV router): --lora-modules at startup, /v1/loras
load / list / unload, chat with "model": adapter (an answer other than the base model's), a bad adapter -> 400."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.vllm.conftest import ENGINE_FLAGS, VLLM_ENV

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

if importlib.util.find_spec("dynamo_mono.lora") is None:
    pytest.skip("the server's LoRA routes (dynamo_mono.lora) are not in this tree yet", allow_module_level=True)


def _tmp(name: str) -> Path:
    return Path(tempfile.gettempdir()) / name


@pytest.fixture(scope="module")
def adapters(tiny_model: Path) -> dict[str, Path]:
    pytest.importorskip("peft", reason="the tiny adapters are made with peft (pip install peft)")
    from dynamo_mono_vllm.tiny_lora import build_tiny_lora
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    other = build_tiny_llama(_tmp("dynamo-mono-vllm-tiny-llama-h64-v1"), seed=0, hidden_size=64, heads=2)
    return {
        "a": build_tiny_lora(tiny_model, _tmp("dynamo-mono-vllm-tiny-lora-a-v1"), seed=1),
        "b": build_tiny_lora(tiny_model, _tmp("dynamo-mono-vllm-tiny-lora-b-v1"), seed=2),
        "other_base": build_tiny_lora(other, _tmp("dynamo-mono-vllm-tiny-lora-h64-v1"), seed=4),
    }


@pytest.fixture(scope="module")
def server(tiny_model: Path, adapters: dict[str, Path]):
    from conformance.server import start_server

    srv = start_server([*ENGINE_FLAGS, "--model", str(tiny_model), "--served-model-name", "tiny",
                        "--router-mode", "kv", "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16",
                        "--lora-modules", f"ad-a={adapters['a']}"], env=VLLM_ENV, timeout=240)
    yield srv
    srv.stop(timeout=30)


def _call(url: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _chat(url: str, model: str) -> tuple[int, dict]:
    return _call(url, "POST", "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "tell me a story about a fox"}],
        "max_tokens": 8, "temperature": 0})


def test_static_adapter_is_a_model_with_its_own_answer(server) -> None:
    status, models = _call(server.url, "GET", "/v1/models")
    assert status == 200
    by_id = {m["id"]: m for m in models["data"]}
    assert by_id["ad-a"]["parent"] == "tiny"
    s_base, base = _chat(server.url, "tiny")
    s_a, with_a = _chat(server.url, "ad-a")
    assert s_base == s_a == 200, (base, with_a)
    assert with_a["model"] == "ad-a"
    assert with_a["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]
    assert _chat(server.url, "ad-a")[1]["choices"][0]["message"]["content"] == \
        with_a["choices"][0]["message"]["content"]  # greedy: the same again


def test_load_list_chat_unload(server, adapters: dict[str, Path]) -> None:
    status, body = _call(server.url, "POST", "/v1/loras",
                         {"lora_name": "ad-b", "source": {"uri": f"file://{adapters['b']}"}})
    assert status == 200 and body["status"] == "success", body
    status, listed = _call(server.url, "GET", "/v1/loras")
    assert status == 200 and set(listed["loras"]) == {"ad-a", "ad-b"}
    s, b = _chat(server.url, "ad-b")
    s_a, a = _chat(server.url, "ad-a")
    assert s == s_a == 200 and b["choices"][0]["message"]["content"] != a["choices"][0]["message"]["content"]
    status, body = _call(server.url, "DELETE", "/v1/loras/ad-b")
    assert status == 200, body
    assert _chat(server.url, "ad-b")[0] == 404


def test_adapter_of_another_base_model_is_a_400(server, adapters: dict[str, Path], tmp_path: Path) -> None:
    # its adapter_config.json names the other model: the server refuses it
    status, body = _call(server.url, "POST", "/v1/loras",
                         {"lora_name": "ad-x", "source": {"uri": f"file://{adapters['other_base']}"}})
    assert status == 400 and "base model" in body["error"]["message"], body
    # names none: the plugin finds the widths differ (vLLM itself would serve it)
    anon = tmp_path / "anon"
    shutil.copytree(adapters["other_base"], anon)
    cfg = json.loads((anon / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = None
    (anon / "adapter_config.json").write_text(json.dumps(cfg))
    status, body = _call(server.url, "POST", "/v1/loras", {"lora_name": "ad-y", "source": {"uri": str(anon)}})
    assert status == 400 and "another base model" in body["error"]["message"], body
    assert not {"ad-x", "ad-y"} & set(_call(server.url, "GET", "/v1/loras")[1]["loras"])
