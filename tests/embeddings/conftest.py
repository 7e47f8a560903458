"""Fixtures of the embeddings tests: the real app in-process with a mocker embedding model (aiohttp test client)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from dynamo_mono.http.state import STATE, ServerState
from tests.app_builder import build_test_app
from tests.openai.conftest import PLUGINS

EMB = "emb"
DIM = 384  # the mocker's default --embedding-dim


@dataclass
class EmbServer:
    """An in-process server and its test client."""

    client: TestClient

    @property
    def state(self) -> ServerState:
        return self.client.app[STATE]

    async def embed(self, payload: dict[str, Any]) -> tuple[int, Any]:
        r = await self.client.post("/v1/embeddings", json={"model": EMB, **payload})
        return r.status, await r.json()

    async def vectors(self, inputs: Any, **kw: Any) -> np.ndarray:
        """The float vectors of inputs (asserting a 200)."""
        status, body = await self.embed({"input": inputs, **kw})
        assert status == 200, body
        return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)

    def tokens(self, text: str) -> list[int]:
        return list(self.state.models[EMB].tokenizer.encode(text))


MakeEmbServer = Callable[..., Awaitable[EmbServer]]


@pytest.fixture
def make_emb_server(aiohttp_client: Any) -> MakeEmbServer:
    async def make(**overrides: Any) -> EmbServer:
        opts: dict[str, Any] = {"engine": "mocker", "model_kind": "embedding", "served_model_name": EMB,
                                "speedup_ratio": 0.0, "log_level": "warning", **overrides}
        return EmbServer(await aiohttp_client(await build_test_app(PLUGINS, opts)))

    return make


@pytest.fixture
async def emb_server(make_emb_server: MakeEmbServer) -> EmbServer:
    return await make_emb_server()


def b64_vector(text: str) -> np.ndarray:
    """A base64 `embedding` decoded as OpenAI's clients do: little-endian float32."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
