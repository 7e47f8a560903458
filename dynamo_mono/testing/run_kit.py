"""The kit's cases over the targets named by --engine-kit-target (run via `python -m dynamo_mono.testing`)."""

from __future__ import annotations

from typing import Iterator

import pytest

from dynamo_mono.testing.engine_kit import KitClient, KitTarget
from dynamo_mono.testing.kit_tests import *  # noqa: F401,F403 - the cases
from dynamo_mono.testing.kit_tests import serve_target


@pytest.fixture(scope="module")
def kit(kit_target: KitTarget) -> Iterator[KitClient]:
    yield from serve_target(kit_target)
