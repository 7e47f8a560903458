"""Conformance fixtures: real server subprocesses (mocker by default; --engine picks another)."""

from __future__ import annotations

import shlex
from typing import Callable, Iterator

import pytest

from conformance.server import ServerProcess, start_server


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dynamo-mono conformance")
    group.addoption("--engine", default="mocker", help="engine the conformance server runs (default: mocker)")
    group.addoption("--server-args", default="", help="extra arguments for every conformance server")


@pytest.fixture(scope="session")
def engine_args(pytestconfig: pytest.Config) -> list[str]:
    engine = pytestconfig.getoption("--engine")
    extra = shlex.split(pytestconfig.getoption("--server-args"))
    fast = ["--speedup-ratio", "0"] if engine == "mocker" else []
    return ["--engine", engine, *fast, *extra]


@pytest.fixture(scope="session")
def server(engine_args: list[str]) -> Iterator[ServerProcess]:
    """One shared server for read-mostly tests."""
    srv = start_server(engine_args)
    yield srv
    srv.stop()


@pytest.fixture
def make_server(engine_args: list[str]) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra flags for one test; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, engine_defaults: bool = True) -> ServerProcess:
        srv = start_server([*(engine_args if engine_defaults else []), *args], env=env)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def base_url(server: ServerProcess) -> str:
    return server.url


@pytest.fixture(scope="session")
def model_name(server: ServerProcess) -> str:
    import json
    import urllib.request

    with urllib.request.urlopen(server.url + "/v1/models", timeout=5) as r:
        return json.loads(r.read())["data"][0]["id"]
