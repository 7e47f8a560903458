"""The frontend seam: register_frontends registrations are validated, their options are serve options, and the
server starts enabled frontends after the models and stops them at shutdown; options of a frontend that is off
are refused."""

from __future__ import annotations

import asyncio

import pytest

from dynamo_mono.api import ConfigError, Option, hookimpl
from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.frontends import enabled_frontends, start_frontends, stop_frontends
from dynamo_mono.plugins import Plugins

EVENTS: list[str] = []


class Echo:
    def __init__(self, state: object) -> None:
        self.state = state

    async def start(self) -> None:
        EVENTS.append(f"start {self.state.settings.echo_port}")

    async def stop(self) -> None:
        EVENTS.append("stop")


class EchoFrontend:
    @hookimpl
    def register_frontends(self, register):
        register("echo", Echo, enable_option="echo_server",
                 options=[Option("echo_server", bool, False, "serve echo", group="echo"),
                          Option("echo_port", int, 7, "echo port", group="echo", min=0)],
                 requires=["json"], description="an echo frontend")


def _plugins(**modules: object) -> Plugins:
    p = Plugins()
    for name, module in modules.items():
        p.register_module(module, name)
    return p


def test_frontend_registration_is_typed_and_its_options_are_serve_options() -> None:
    p = _plugins(echo=EchoFrontend())
    reg = p.get("frontend", "echo")
    assert reg.enable_option == "echo_server" and reg.requires == ["json"] and reg.missing() == []
    names = [o.name for o in serve_options(p)]
    assert "echo_server" in names and "echo_port" in names


@pytest.mark.parametrize("enable, needle", [
    ("nope", "enable_option must name one of the frontend's options"),
    ("echo_port", "a bool with default False"),
])
def test_enable_option_must_be_a_bool_option_of_the_frontend(enable: str, needle: str) -> None:
    class Bad:
        @hookimpl
        def register_frontends(self, register):
            register("bad", Echo, enable_option=enable, options=[Option("echo_port", int, 7, "p")])

    p = _plugins(bad=Bad())
    assert p.registered("frontend") == {}
    assert p.infos["bad"].error.startswith("plugin bad: register_frontends: ") and needle in p.infos["bad"].error


def test_enable_option_is_required_and_keywords_checked() -> None:
    class Missing:
        @hookimpl
        def register_frontends(self, register):
            register("m", Echo, optoins=[])

    p = _plugins(missing=Missing())
    p.registered("frontend")  # collect
    assert "unexpected keyword 'optoins'" in p.infos["missing"].error


def _settings(p: Plugins, **cli: object):
    return resolve(serve_options(p), cli, env={})


def test_off_frontend_refuses_its_options_and_on_frontend_starts_and_stops() -> None:
    p = _plugins(echo=EchoFrontend())
    assert enabled_frontends(_settings(p), p) == []
    with pytest.raises(ConfigError, match="--echo-port only applies with --echo-server"):
        enabled_frontends(_settings(p, echo_port=9), p)
    settings = _settings(p, echo_server=True, echo_port=9)
    regs = enabled_frontends(settings, p)
    assert [r.name for r in regs] == ["echo"]

    class State:
        pass

    state = State()
    state.settings = settings
    EVENTS.clear()

    async def run() -> None:
        started = await start_frontends(regs, state)
        await stop_frontends(started)

    asyncio.run(run())
    assert EVENTS == ["start 9", "stop"]


def test_enabled_frontend_with_missing_modules_names_the_install_hint() -> None:
    class NeedsMissing:
        @hookimpl
        def register_frontends(self, register):
            register("x", Echo, enable_option="x_server", options=[Option("x_server", bool, False, "x")],
                     requires=["no_such_module_xyz"], install_hint="pip install x-frontend")

    p = _plugins(x=NeedsMissing())
    with pytest.raises(ConfigError, match="needs no_such_module_xyz .*install: pip install x-frontend"):
        enabled_frontends(_settings(p, x_server=True), p)
