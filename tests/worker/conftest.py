"""Fixtures of the scale-out tests: an in-process server state with no local engines."""

from __future__ import annotations

import pytest

from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.plugins import get_plugins
from dynamo_mono.server import build_state


@pytest.fixture
async def remote_only_state():
    """ServerState of `serve --num-instances 0` (the embedded tiny model, block size 64)."""
    plugins = get_plugins()
    settings = resolve(serve_options(plugins), {"num_instances": 0, "worker_token": "t", "migration_limit": 2},
                       env={})
    state = await build_state(settings, plugins)
    yield state
