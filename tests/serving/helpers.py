"""Helpers for serving-layer tests: drive the event loop by turns (never by wall-clock time)."""

from __future__ import annotations

import asyncio
from typing import Callable

# Loop turns a condition may take to come true; a hang guard only (each turn is one asyncio.sleep(0)).
MAX_TURNS = 10_000


async def settle(cond: Callable[[], bool], what: str = "condition") -> None:
    """Yield to the loop until cond() holds; fail after MAX_TURNS turns (a hang, not a slow machine)."""
    for _ in range(MAX_TURNS):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} not reached after {MAX_TURNS} loop turns")


async def turns(n: int = 20) -> None:
    """Let every ready task run for n loop turns (to show that something does NOT happen)."""
    for _ in range(n):
        await asyncio.sleep(0)
