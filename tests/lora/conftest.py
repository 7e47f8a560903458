"""Fixtures of the LoRA tests: an in-process server on the mocker (several instances) and adapter directories."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from dynamo_mono.http.state import STATE
from dynamo_mono.plugins import get_plugins
from tests.app_builder import build_test_app
from tests.lora.adapters import make_adapter

MODEL = "tiny-chatml"

MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    async def make(**overrides: Any) -> TestClient:
        opts = {"speedup_ratio": 0.0, "log_level": "warning", "num_instances": 2}
        opts.update(overrides)
        return await aiohttp_client(await build_test_app(get_plugins(), opts))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()


@pytest.fixture
def adapter(tmp_path) -> Callable[..., str]:
    def make(name: str = "a1", **kw: Any) -> str:
        return make_adapter(str(tmp_path), name, **kw)

    return make


def state_of(client: TestClient):
    return client.server.app[STATE]
