"""Frontends beside the HTTP server (plugins' register_frontends): which are on, starting and stopping them."""

from __future__ import annotations

import logging
from typing import Any

from dynamo_mono.config import ConfigError, Settings
from dynamo_mono.hookspecs import Frontend
from dynamo_mono.plugins import Registration

log = logging.getLogger("dynamo_mono.frontends")


def enabled_frontends(settings: Settings, plugins: Any) -> list[Registration]:
    """The frontends whose enable option is on; ConfigError when one cannot run (missing modules) or when an
    option of a frontend that is off was set (it would be ignored)."""
    enabled = []
    for reg in plugins.registered("frontend").values():
        switch = next(o for o in reg.options if o.name == reg.enable_option)
        if settings.get(reg.enable_option):
            missing = reg.missing()
            if missing:
                hint = f"; install: {reg.install_hint}" if reg.install_hint else ""
                raise ConfigError(f"{switch.flag} needs {', '.join(missing)} (frontend {reg.name!r}){hint}")
            enabled.append(reg)
            continue
        given = [o for o in reg.options if o is not switch and settings.source(o.name) != "default"]
        if given:
            raise ConfigError(f"{', '.join(o.flag for o in given)} only appl{'ies' if len(given) == 1 else 'y'} with "
                              f"{switch.flag} (frontend {reg.name!r} is off)")
    return enabled


async def start_frontends(regs: list[Registration], state: Any) -> list[Frontend]:
    """Build and start each enabled frontend; on a failure the ones already started are stopped again."""
    started: list[Frontend] = []
    try:
        for reg in regs:
            frontend = reg.factory(state)
            await frontend.start()
            started.append(frontend)
    except BaseException:
        await stop_frontends(started)
        raise
    return started


async def stop_frontends(frontends: list[Frontend]) -> None:
    """Stop frontends in reverse start order; one failing to stop does not keep the others running."""
    for frontend in reversed(frontends):
        try:
            await frontend.stop()
        except Exception:  # shutdown goes on; the failure is logged
            log.exception("stopping frontend %r failed", frontend)
