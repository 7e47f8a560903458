"""Fixtures of the SGLang plugin tests: the plugin and the fake sglang 0.5.23 on sys.path for the test, then gone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "sglang"
FAKE = PLUGIN / "fake"


def _purge() -> None:
    for name in [m for m in sys.modules if m == "sglang" or m.startswith(("sglang.", "dynamo_mono_sglang"))]:
        del sys.modules[name]


@pytest.fixture(autouse=True)
def fake_sglang() -> Iterator[None]:
    """plugins/sglang and its fake first on sys.path (removed afterwards, so no other test sees an `sglang`)."""
    added = [str(FAKE), str(PLUGIN)]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            sys.path.remove(p)
        _purge()
