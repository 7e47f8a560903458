"""A vLLM pooling model behind /v1/embeddings: the tiny random Llama (marked Matryoshka) on vLLM's pooling runner."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.vllm.conftest import VLLM_ENV

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

FLAGS = ["--engine", "vllm", "--dtype", "float32", "--enforce-eager", "--block-size", "32", "--max-model-len", "512",
         "--num-gpu-blocks-override", "64", "--model-kind", "embedding", "--served-model-name", "emb",
         "--embedding-batch-size", "3"]


@pytest.fixture(scope="module")
def embedding_model() -> Path:
    """The tiny random Llama with `is_matryoshka` in its config: vLLM embeds with last-token pooling, normalised."""
    from dynamo_mono_vllm.tiny_model import build_tiny_llama

    return build_tiny_llama(Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-llama-embed-v1", seed=0,
                            matryoshka=True)


@pytest.fixture(scope="module")
def vllm_embedding_server(embedding_model: Path):
    from conformance.server import start_server

    # The server subprocess imports the plugin the way this test process does (an uninstalled checkout too).
    import dynamo_mono_vllm

    plugin_root = str(Path(dynamo_mono_vllm.__file__).resolve().parent.parent)
    env = {**VLLM_ENV, "PYTHONPATH": os.pathsep.join(p for p in (plugin_root, os.environ.get("PYTHONPATH")) if p)}
    srv = start_server([*FLAGS, "--model", str(embedding_model)], env=env, timeout=240)
    yield srv
    srv.stop(timeout=30)


def test_vllm_pooling_model_serves_embeddings(vllm_embedding_server) -> None:
    import openai

    client = openai.OpenAI(base_url=vllm_embedding_server.url + "/v1", api_key="x", timeout=60, max_retries=0)
    texts = [f"text number {i} about cats and dogs" for i in range(8)]  # 3 engine batches of <= 3 inputs
    r = client.embeddings.create(model="emb", input=texts, encoding_format="float")
    floats = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert floats.shape == (8, 128)  # the model's hidden size
    np.testing.assert_allclose(np.linalg.norm(floats, axis=1), 1.0, atol=1e-5)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 8
    b64 = client.embeddings.create(model="emb", input=texts)  # the SDK asks for base64 and decodes it
    np.testing.assert_array_equal(np.array([d.embedding for d in b64.data], dtype=np.float32), floats)
    # a batched input gets the vector it gets alone; token-id input = its text
    alone = client.embeddings.create(model="emb", input=texts[5], encoding_format="float").data[0].embedding
    np.testing.assert_allclose(np.array(alone, dtype=np.float32), floats[5], atol=1e-5)
    # Matryoshka: vLLM truncates and renormalises
    short = client.embeddings.create(model="emb", input=texts[0], dimensions=16, encoding_format="float")
    v = np.array(short.data[0].embedding, dtype=np.float32)
    np.testing.assert_allclose(v, floats[0, :16] / np.linalg.norm(floats[0, :16]), atol=1e-5)
    with pytest.raises(openai.BadRequestError, match="larger than the 128 dimensions"):
        client.embeddings.create(model="emb", input="x", dimensions=129)
    with pytest.raises(openai.BadRequestError, match="is an embedding model"):
        client.chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match=r"input\[1\] has \d+ tokens"):
        client.embeddings.create(model="emb", input=["ok", "word " * 600])


def test_runner_flags_must_match_the_kind(embedding_model: Path) -> None:
    from dynamo_mono.config import ConfigError
    from dynamo_mono.engine import EngineArgs
    from dynamo_mono_vllm.engine_args import build_engine_args

    m = str(embedding_model)
    assert build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {}, kind="embedding")).runner == "pooling"
    with pytest.raises(ConfigError, match="--runner generate cannot serve an embedding model"):
        build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {}, extra_args=["--runner", "generate"],
                                     kind="embedding"))
    with pytest.raises(ConfigError, match="--runner pooling serves embedding models"):
        build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {}, extra_args=["--runner", "pooling"]))
