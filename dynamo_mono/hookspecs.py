"""Plugin hook specifications: every built-in and third-party plugin implements some of these."""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("dynamo_mono")
hookimpl = pluggy.HookimplMarker("dynamo_mono")


@hookspec
def register_engines(register: Callable[..., None]) -> None:
    """Register engine factories: register(name, factory, options=[Option...], requires=[modules], install_hint=str, description=str)."""


@hookspec
def register_parsers(register: Callable[..., None]) -> None:
    """Register output parsers: register(kind, name, factory) with kind "reasoning" or "tool_call"."""


@hookspec
def register_modalities(register: Callable[..., None]) -> None:
    """Register generation handlers: register(name, factory, routes=[(method, path)], requires=[...])."""


@hookspec
def register_transports(register: Callable[..., None]) -> None:
    """Register worker/KV transports: register(name, factory, requires=[modules], install_hint=str)."""


@hookspec
def register_routes(app: Any) -> None:
    """Add HTTP routes to the aiohttp application before it starts."""


@hookspec
def register_cli(parser: Any, engine: str) -> None:
    """Add subcommands to the `dynamo-mono` argparse subparsers object (`engine`: the one the command line names)."""
