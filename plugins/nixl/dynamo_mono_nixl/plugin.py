"""Registers the `nixl` transport; NIXL is imported only when a transport is created."""

from __future__ import annotations

from typing import Callable

from dynamo_mono.api import hookimpl

INSTALL_HINT = "pip install nixl-cu12==1.5.1 && pip install --no-deps nixl==1.5.1"


def _create(**kwargs):
    from dynamo_mono_nixl.transport import NixlKvTransport

    return NixlKvTransport(**kwargs)


@hookimpl
def register_transports(register: Callable[..., None]) -> None:
    register("nixl", _create, requires=["nixl"], install_hint=INSTALL_HINT,
             description="KV blocks by NIXL READ over UCX (CPU or GPU memory); control messages over TCP")
