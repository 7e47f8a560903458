"""pytest plugin of the engine kit: `--engine-kit-target` (repeatable) picks the targets run_kit.py runs."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("dynamo-mono engine kit").addoption(
        "--engine-kit-target", action="append", default=[],
        help="kit target: a built-in name (mocker) or module:attribute of a KitTarget; repeatable")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kit_target" in metafunc.fixturenames:
        from dynamo_mono.testing.engine_kit import resolve_target

        specs = metafunc.config.getoption("--engine-kit-target") or ["mocker"]
        targets = [resolve_target(s) for s in specs]
        metafunc.parametrize("kit_target", targets, ids=[t.name for t in targets], scope="module")
