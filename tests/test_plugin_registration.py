"""register(...) callbacks: explicit signatures, errors recorded per plugin (never raised), modality lookup."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamo_mono.api import Option, hookimpl
from dynamo_mono.plugins import Plugins

ROOT = Path(__file__).resolve().parents[1]


def _factory(*args, **kwargs):
    return None


class GoodEngines:
    @hookimpl
    def register_engines(self, register):
        register("good", _factory, options=[Option("good_knob", int, 1, "A knob.", group="engine: good")],
                 requires=["json"], install_hint="pip install good", description="a fine engine",
                 passthrough_args=True)


class TypoEngines:
    @hookimpl
    def register_engines(self, register):
        register("typo", _factory, optoins=[])


def _plugins(**modules: object) -> Plugins:
    p = Plugins()
    for name, module in modules.items():
        p.register_module(module, name)
    return p


def test_good_registration_is_typed() -> None:
    reg = _plugins(good=GoodEngines()).get("engine", "good")
    assert reg.plugin == "good" and reg.passthrough_args is True
    assert [o.name for o in reg.options] == ["good_knob"]
    assert reg.requires == ["json"] and reg.install_hint == "pip install good" and reg.missing() == []
    assert not hasattr(reg, "extra")
    assert reg.kinds == ("chat",)  # the default: a chat engine


def test_engine_kinds_are_typed_and_deduplicated() -> None:
    class Both:
        @hookimpl
        def register_engines(self, register):
            register("both", _factory, kinds=["embedding", "chat", "embedding"])

    assert _plugins(both=Both()).get("engine", "both").kinds == ("embedding", "chat")


def test_misspelt_keyword_is_that_plugins_load_error() -> None:
    p = _plugins(good=GoodEngines(), typo=TypoEngines())
    assert set(p.registered("engine")) == {"good"}  # the core goes on; the good plugin is unaffected
    assert p.infos["good"].error is None
    assert p.infos["typo"].error == ("plugin typo: register_engines: unexpected keyword 'optoins' "
                                     "(did you mean 'options'?)")
    with pytest.raises(LookupError, match="failed to load: plugin typo: register_engines: unexpected keyword"):
        p.get("engine", "typo")


def test_register_has_an_inspectable_signature() -> None:
    seen = {}

    class Spy:
        @hookimpl
        def register_engines(self, register):
            seen["engines"] = inspect.signature(register)

        @hookimpl
        def register_modalities(self, register):
            seen["modalities"] = inspect.signature(register)

    _plugins(spy=Spy()).registered("engine")
    assert list(seen["engines"].parameters) == ["name", "factory", "options", "requires", "install_hint",
                                                "description", "passthrough_args", "kinds"]
    assert list(seen["modalities"].parameters)[:3] == ["kind", "name", "factory"]
    assert "passthrough_args" not in seen["modalities"].parameters


@pytest.mark.parametrize("call,needle", [
    (lambda r: r("x"), "missing a required argument: 'factory'"),
    (lambda r: r("x", _factory, ["json"]), "too many positional arguments"),
    (lambda r: r("x", _factory, requires="json"), "requires must be a list of module names"),
    (lambda r: r("x", _factory, options=["--flag"]), "options must be Option instances, not str"),
    (lambda r: r("x", _factory, passthrough_args="yes"), "passthrough_args must be True or False"),
    (lambda r: r("x", _factory, kinds="embedding"), "kinds must be a non-empty list of chat, embedding"),
    (lambda r: r("x", _factory, kinds=["chat", "image"]), "kinds must be a non-empty list of chat, embedding"),
    (lambda r: r("x", _factory, kinds=[]), "kinds must be a non-empty list"),
    (lambda r: r("x", "not callable"), "factory must be callable"),
    (lambda r: r("", _factory), "name must be a non-empty string"),
])
def test_bad_engine_registrations_name_the_plugin(call, needle) -> None:
    class Bad:
        @hookimpl
        def register_engines(self, register):
            call(register)

    p = _plugins(bad=Bad())
    assert p.registered("engine") == {}
    assert p.infos["bad"].error.startswith("plugin bad: register_engines: ") and needle in p.infos["bad"].error


def test_parser_kind_and_transport_keywords() -> None:
    class Mixed:
        @hookimpl
        def register_parsers(self, register):
            register("reasoning", "ok", _factory)
            register("thinking", "nope", _factory)

        @hookimpl
        def register_transports(self, register):
            register("pipe", _factory, requires=["json"], description="a pipe", passthrough_args=True)

    p = _plugins(mixed=Mixed())
    assert set(p.registered("reasoning_parser")) == {"ok"}
    assert p.registered("transport") == {}
    err = p.infos["mixed"].error
    assert "plugin mixed: register_parsers: parser kind must be 'reasoning' or 'tool_call', not 'thinking'" in err
    assert "plugin mixed: register_transports: unexpected keyword 'passthrough_args'" in err


def test_duplicate_name_is_rejected_naming_both_plugins() -> None:
    class Again:
        @hookimpl
        def register_engines(self, register):
            register("good", _factory)

    p = _plugins(good=GoodEngines(), again=Again())
    assert p.get("engine", "good").plugin == "good"
    assert p.infos["again"].error == "plugin again: register_engines: engine 'good' is already registered by plugin good"


def test_a_hook_that_raises_is_recorded() -> None:
    class Boom:
        @hookimpl
        def register_engines(self, register):
            raise RuntimeError("no GPU")

    p = _plugins(boom=Boom(), good=GoodEngines())
    assert set(p.registered("engine")) == {"good"}
    assert p.infos["boom"].error == "plugin boom: register_engines: RuntimeError: no GPU"


def test_collecting_again_does_not_duplicate() -> None:
    p = _plugins(good=GoodEngines(), typo=TypoEngines())
    p.registered("engine")
    p.register_module(object(), "empty")  # forces a new collection
    assert set(p.registered("engine")) == {"good"}
    assert len(p.infos["good"].registrations) == 1
    assert p.infos["typo"].error.count("unexpected keyword") == 1


class Media:
    @hookimpl
    def register_modalities(self, register):
        register("image", "pixels", _factory, requires=["json"], description="draws pixels")
        register("audio", "beeps", _factory, options=[Option("beep_hz", int, 440, "Pitch.", group="audio")])
        register("speech", "talk", _factory)


def test_modalities_register_by_kind_and_look_up() -> None:
    p = _plugins(media=Media())
    reg = p.modality("image")
    assert (reg.kind, reg.name, reg.plugin, reg.description) == ("image_modality", "pixels", "media", "draws pixels")
    assert p.modality("audio", "beeps").options[0].name == "beep_hz"
    assert p.infos["media"].error == ("plugin media: register_modalities: modality kind must be one of "
                                      "image, video, audio, not 'speech'")
    with pytest.raises(LookupError, match=r"no video modality is registered.*available: image: pixels; audio: beeps"):
        p.modality("video")
    with pytest.raises(LookupError, match=r"unknown image modality 'nope'.*available: pixels"):
        p.modality("image", "nope")
    with pytest.raises(LookupError, match="unknown modality kind 'text'"):
        p.modality("text")


def test_several_modalities_of_a_kind_need_a_name() -> None:
    class More:
        @hookimpl
        def register_modalities(self, register):
            register("image", "brush", _factory)

    p = _plugins(media=Media(), more=More())
    with pytest.raises(LookupError, match=r"several image modalities are registered \(brush, pixels\): name one"):
        p.modality("image")
    assert p.modality("image", "brush").plugin == "more"


def test_plugins_command_shows_a_registration_error(tmp_path: Path) -> None:
    """An installed plugin with a misspelt keyword: listed with its error; the others still work."""
    dist = tmp_path / "typo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: typo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dynamo_mono]\ntypo = typo_plugin_mod\n")
    (tmp_path / "typo_plugin_mod.py").write_text(
        "from dynamo_mono.api import hookimpl\n\n"
        "@hookimpl\ndef register_engines(register):\n    register('typo', object, descripton='oops')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "plugins"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "typo  (typo-plugin 1.0, typo_plugin_mod)  [error]" in r.stdout
    assert ("failed to load: plugin typo: register_engines: unexpected keyword 'descripton' "
            "(did you mean 'description'?)") in r.stdout
    assert "mocker" in r.stdout
