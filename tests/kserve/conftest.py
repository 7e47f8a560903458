"""KServe gRPC frontend fixtures: real servers with the plugin on, and a tritonclient gRPC client for them."""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterator

import pytest

from conformance.server import ServerProcess, start_server

_HINT = "pip install -e plugins/kserve && pip install --no-deps tritonclient python-rapidjson 'ml-dtypes<=0.5.4'"
try:
    import dynamo_mono_kserve  # noqa: F401
    import grpc  # noqa: F401
    import tritonclient.grpc  # noqa: F401
except (ImportError, RuntimeError) as exc:  # tritonclient raises RuntimeError when its grpc deps are missing
    pytest.skip(f"KServe frontend tests need grpcio, the plugin and tritonclient ({exc}); install: {_HINT}",
                allow_module_level=True)


class KServeServer:
    """A dynamo-mono server with the KServe frontend: HTTP url and the gRPC address from --grpc-ready-file."""

    def __init__(self, proc: ServerProcess, grpc_address: str) -> None:
        self.proc = proc
        self.url = proc.url
        self.grpc = grpc_address

    def client(self) -> "tritonclient.grpc.InferenceServerClient":
        return tritonclient.grpc.InferenceServerClient(self.grpc)


def start_kserve(*args: str) -> KServeServer:
    ready = os.path.join(tempfile.mkdtemp(prefix="dynamo-mono-kserve-"), "grpc-ready")
    proc = start_server(["--engine", "mocker", "--kserve-grpc-server", "--grpc-port", "0", "--grpc-ready-file",
                         ready, *args])
    # the server writes the gRPC ready file before its HTTP ready file: it exists once start_server returns
    with open(ready) as f:
        return KServeServer(proc, f.read().strip())


@pytest.fixture(scope="module")
def kserve() -> Iterator[KServeServer]:
    """One shared fast server (--speedup-ratio 0)."""
    srv = start_kserve("--speedup-ratio", "0")
    yield srv
    srv.proc.stop()


@pytest.fixture
def make_kserve() -> Iterator[Callable[..., KServeServer]]:
    started: list[KServeServer] = []

    def make(*args: str) -> KServeServer:
        srv = start_kserve(*args)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.proc.stop()
