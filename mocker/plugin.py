"""Registers the mocker engine with the plugin system (entry point `mocker = "mocker.plugin"`)."""

from __future__ import annotations

from typing import Callable

from dynamo_mono.api import hookimpl
from mocker.engine import create_engine
from mocker.options import MOCKER_OPTIONS


@hookimpl
def register_engines(register: Callable[..., None]) -> None:
    register(
        "mocker",
        create_engine,
        options=MOCKER_OPTIONS,
        description="simulated vLLM-style engine (continuous batching, prefix-cached paged KV), no GPU needed",
        kinds=("chat", "embedding"),
    )
