"""One server, several models: two chat models with different tokenizers from --config, a third brought by a
remote worker; the official openai SDK talks to all three."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from tests.models.tiny_models import small_bpe_model_dir
from tests.worker.harness import get_json, start_server, start_worker, wait_until

pytestmark = pytest.mark.timeout(120)


def test_config_file_models_and_a_worker_model_side_by_side(tmp_path: Path) -> None:
    beta_dir = small_bpe_model_dir(tmp_path / "beta")
    config = tmp_path / "models.yaml"
    config.write_text(f"""
models:
  - name: alpha
    options: {{speedup_ratio: 0}}
  - name: beta
    model: {beta_dir}
    instances: 2
    reasoning_parser: deepseek_r1
    options:
      speedup_ratio: 0
      block_size: 32
""")
    server = start_server(["--config", str(config)])
    try:
        worker = start_worker(server.url, ["--speedup-ratio", "0", "--served-model-name", "gamma",
                                           "--block-size", "16"], name="gamma")
        try:
            wait_until(lambda: len(get_json(server.url + "/v1/models")[1]["data"]) == 3, 30, "three models listed")
            client = OpenAI(base_url=server.url + "/v1", api_key="unused")
            listed = {m.id: m for m in client.models.list().data}
            assert set(listed) == {"alpha", "beta", "gamma"}
            assert all(m.model_extra["kind"] == "chat" for m in listed.values())
            usage = {}
            for name in ("alpha", "beta", "gamma"):
                r = client.chat.completions.create(model=name, max_tokens=4,
                                                   messages=[{"role": "user", "content": "hello world, how are you?"}])
                assert r.model == name and r.choices[0].finish_reason in ("stop", "length")
                usage[name] = r.usage.prompt_tokens
                stream = client.chat.completions.create(model=name, max_tokens=3, stream=True,
                                                        messages=[{"role": "user", "content": "hi"}])
                assert [c for c in stream if c.choices and c.choices[0].finish_reason]
            # alpha and gamma share the embedded tokenizer; beta's own vocabulary splits the text differently
            assert usage["alpha"] == usage["gamma"] != usage["beta"]
            _, health = get_json(server.url + "/health")
            by_name = {m["name"]: m for m in health["models"]}
            assert len(by_name["beta"]["ready_instances"]) == 2 and not by_name["gamma"]["configured"]
            metrics = _metrics(server.url)
            assert _gauge(metrics, "dynamo_frontend_model_kv_cache_block_size", "beta") == 32
            assert _gauge(metrics, "dynamo_frontend_model_kv_cache_block_size", "gamma") == 16
        finally:
            worker.stop()
        wait_until(lambda: {m["id"] for m in get_json(server.url + "/v1/models")[1]["data"]} == {"alpha", "beta"},
                   30, "the worker's model gone with it")
    finally:
        server.stop()


def _metrics(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return r.read().decode()


def _gauge(text: str, name: str, model: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for model {model}")
