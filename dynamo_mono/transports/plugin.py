"""Registers the built-in `tcp` transport (entry point `tcp = "dynamo_mono.transports.plugin"`)."""

from __future__ import annotations

from typing import Callable

from dynamo_mono.hookspecs import hookimpl


def _create_tcp(**kwargs):
    from dynamo_mono.transports.tcp import TcpKvTransport

    return TcpKvTransport(**kwargs)


@hookimpl
def register_transports(register: Callable[..., None]) -> None:
    register("tcp", _create_tcp, description="length-prefixed msgpack frames and KV blocks over TCP (built in)")
