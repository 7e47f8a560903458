"""Plugin loading (pluggy entry points, group `dynamo_mono`) and the registries the hooks fill."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from dynamo_mono import hookspecs

GROUP = "dynamo_mono"


@dataclass
class Registration:
    """One thing a plugin registered: an engine, parser, modality or transport."""

    kind: str  # "engine" | "reasoning_parser" | "tool_call_parser" | "modality" | "transport"
    name: str
    factory: Callable[..., Any]
    plugin: str
    options: list[Any] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    install_hint: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def missing(self) -> list[str]:
        """Optional dependencies that are not importable (empty = usable)."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


@dataclass
class PluginInfo:
    """A plugin as `dynamo-mono plugins` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None
    registrations: list[Registration] = field(default_factory=list)


class Plugins:
    """Loads entry-point plugins once and exposes what they registered, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._by_kind: dict[str, dict[str, Registration]] = {}
        self._collected = False

    # --- loading -------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import every entry point of the group; a failing one is recorded, not raised."""
        for ep in md.entry_points(group=GROUP):
            if ep.name in self.infos:
                continue
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist else "?",
                version=dist.version if dist else "?",
                module=ep.value,
            )
            self.infos[ep.name] = info
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # any import failure of a plugin must not crash the core
                info.error = f"{type(exc).__name__}: {exc}"

    def register_module(self, module: Any, name: str) -> None:
        """Register an in-process plugin object (tests, embedding applications)."""
        self.pm.register(module, name=name)
        self.infos.setdefault(name, PluginInfo(name, "(in-process)", "", getattr(module, "__name__", name)))
        self._collected = False
        self._by_kind.clear()

    def _collect(self) -> None:
        if self._collected:
            return
        self._collected = True
        for impl_name, kind, hook in (
            ("register_engines", "engine", self.pm.hook.register_engines),
            ("register_parsers", None, self.pm.hook.register_parsers),
            ("register_modalities", "modality", self.pm.hook.register_modalities),
            ("register_transports", "transport", self.pm.hook.register_transports),
        ):
            for impl in hook.get_hookimpls():
                plugin_name = impl.plugin_name
                try:
                    impl.function(register=self._registrar(kind, plugin_name))
                except Exception as exc:
                    info = self.infos.get(plugin_name)
                    if info is not None:
                        info.error = f"{impl_name} failed: {type(exc).__name__}: {exc}"

    def _registrar(self, kind: str | None, plugin_name: str) -> Callable[..., None]:
        def register(*args: Any, **kw: Any) -> None:
            if kind is None:  # parsers: register(kind, name, factory)
                pkind, name, factory = args
                if pkind not in ("reasoning", "tool_call"):
                    raise ValueError(f"parser kind must be 'reasoning' or 'tool_call', not {pkind!r}")
                reg_kind = f"{pkind}_parser"
            else:
                name, factory = args
                reg_kind = kind
            reg = Registration(
                kind=reg_kind,
                name=name,
                factory=factory,
                plugin=plugin_name,
                options=list(kw.pop("options", [])),
                requires=list(kw.pop("requires", [])),
                install_hint=kw.pop("install_hint", ""),
                description=kw.pop("description", ""),
                extra=kw,
            )
            self._by_kind.setdefault(reg_kind, {})[name] = reg
            info = self.infos.get(plugin_name)
            if info is not None:
                info.registrations.append(reg)

        return register

    # --- lookups -------------------------------------------------------------------------
    def registered(self, kind: str) -> dict[str, Registration]:
        self._collect()
        return dict(self._by_kind.get(kind, {}))

    def get(self, kind: str, name: str) -> Registration:
        regs = self.registered(kind)
        if name not in regs:
            failed = [i for i in self.infos.values() if i.error and i.name == name]
            hint = f" (plugin {name!r} failed to load: {failed[0].error})" if failed else ""
            avail = ", ".join(sorted(regs)) or "none"
            raise LookupError(f"unknown {kind.replace('_', ' ')} {name!r}{hint}; available: {avail}")
        return regs[name]

    def add_routes(self, app: Any) -> None:
        self.pm.hook.register_routes(app=app)

    def add_cli(self, subparsers: Any, engine: str = "mocker") -> None:
        self.pm.hook.register_cli(parser=subparsers, engine=engine)


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded from entry points on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
        _plugins.load_entry_points()
    return _plugins
