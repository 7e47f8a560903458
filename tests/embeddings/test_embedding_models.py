"""Embedding models next to chat models: the --config file, engine kinds, kind-specific options, the CLI, workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dynamo_mono.cli import serve_options
from dynamo_mono.config import ConfigError, resolve
from dynamo_mono.http.app import create_app
from dynamo_mono.server import build_state, stop_engines
from mocker.embedding import HashedEmbedder
from tests.embeddings.conftest import DIM
from tests.openai.conftest import PLUGINS, assert_envelope

pytestmark = pytest.mark.timeout(60)


async def _state(options: dict[str, Any]):
    return await build_state(resolve(serve_options(PLUGINS, options.get("engine", "mocker")), options, env={}),
                             PLUGINS)


async def test_config_file_serves_a_chat_and_an_embedding_model_side_by_side(tmp_path: Path,
                                                                            aiohttp_client: Any) -> None:
    config = tmp_path / "models.yaml"
    config.write_text("""
models:
  - name: chatty
    options: {speedup_ratio: 0}
  - name: vectors
    kind: embedding
    instances: 2
    options: {speedup_ratio: 0, embedding_dim: 96}
""")
    state = await _state({"config": str(config)})
    app = create_app(state)
    app.on_cleanup.append(lambda _: stop_engines(state))
    client = await aiohttp_client(app)
    r = await client.get("/v1/models")
    assert {m["id"]: m["kind"] for m in (await r.json())["data"]} == {"chatty": "chat", "vectors": "embedding"}
    r = await client.post("/v1/embeddings", json={"model": "vectors", "input": ["hello", "world"]})
    assert r.status == 200 and len((await r.json())["data"][1]["embedding"]) == 96
    r = await client.post("/v1/chat/completions", json={"model": "chatty", "max_tokens": 3,
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200
    # each route refuses the other kind, in the OpenAI envelope
    r = await client.post("/v1/embeddings", json={"model": "chatty", "input": "hello"})
    assert r.status == 400 and "is a chat model" in assert_envelope(await r.json(), 400)["message"]
    r = await client.post("/v1/chat/completions", json={"model": "vectors",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 400 and "is an embedding model" in assert_envelope(await r.json(), 400)["message"]


@pytest.mark.parametrize("options, fragment", [
    ({"engine": "scripted", "model_kind": "embedding"},
     "engine 'scripted' does not serve embedding models (it serves: chat)"),
    ({"model_kind": "embedding", "reasoning_parser": "qwen3"},
     "reasoning_parser apply to chat models only, not to embedding models"),
    ({"model_kind": "embedding", "mocker_output": "echo"},
     "--mocker-output='echo' does not apply to the mocker's embedding models"),
    ({"model_kind": "embedding", "disaggregation_mode": "prefill"},
     "--disaggregation-mode='prefill' does not apply to the mocker's embedding models"),
    ({"embedding_dim": 64}, "--embedding-dim=64 does not apply to the mocker's chat models"),
])
async def test_what_a_kind_does_not_act_on_is_refused_at_startup(options: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        await _state({"speedup_ratio": 0.0, **options})
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_cli_serves_an_embedding_model_and_a_worker_joins_it(tmp_path: Path) -> None:
    """`serve --engine mocker --model-kind embedding`, plus a worker instance of the same model (wire protocol);
    a worker with another vector size is refused."""
    from tests.worker.harness import get_json, post_json, start_server, start_worker, wait_until

    server = start_server(["--engine", "mocker", "--model-kind", "embedding", "--served-model-name", "emb",
                           "--speedup-ratio", "0", "--router-mode", "round-robin", "--embedding-batch-size", "2"])
    try:
        worker = start_worker(server.url, ["--model-kind", "embedding", "--served-model-name", "emb",
                                           "--speedup-ratio", "0"], name="w-emb")
        try:
            wait_until(lambda: len(get_json(server.url + "/health")[1]["models"][0]["ready_instances"]) == 2, 30,
                       "the worker's instance joined")
            texts = [f"worker text {i}" for i in range(8)]  # 4 batches, round-robin over local + worker
            status, body = post_json(server.url + "/v1/embeddings", {"model": "emb", "input": texts})
            assert status == 200, body
            got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
            from dynamo_mono.preprocess.model_dir import load_model_dir

            tok = load_model_dir(None).tokenizer
            want = HashedEmbedder(DIM).embed([tok.encode(t) for t in texts])
            np.testing.assert_allclose(got, want, atol=1e-6)  # same vectors from either instance
            bad = start_worker(server.url, ["--model-kind", "embedding", "--served-model-name", "emb",
                                            "--speedup-ratio", "0", "--embedding-dim", "8"], name="w-bad")
            assert bad.proc.wait(timeout=30) == 2
            assert "embedding size 8" in bad.log()
        finally:
            worker.stop()
    finally:
        server.stop()
