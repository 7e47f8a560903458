"""The real server app built in-process from option overrides, for route tests (aiohttp test client)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.http.app import create_app
from dynamo_mono.server import build_state, stop_engines


async def build_test_app(plugins: Any, options: dict[str, Any]) -> web.Application:
    """create_app over build_state; the engines stop when the app is cleaned up."""
    settings = resolve(serve_options(plugins, options.get("engine", "mocker")), options, env={})
    state = await build_state(settings, plugins)
    app = create_app(state)

    async def _stop(_: web.Application) -> None:
        await stop_engines(state)

    app.on_cleanup.append(_stop)
    return app
