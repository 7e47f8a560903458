"""Plugin loading (pluggy entry points, group `dynamo_mono`) and the registries the hooks fill."""

from __future__ import annotations

import difflib
import importlib.metadata as md
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from dynamo_mono import hookspecs
from dynamo_mono.config import Option
from dynamo_mono.engine import ENGINE_KINDS
from dynamo_mono.hookspecs import MODALITY_KINDS, PARSER_KINDS

GROUP = "dynamo_mono"


class RegistrationError(ValueError):
    """A plugin called `register(...)` wrongly; the message names the plugin and the hook."""


@dataclass
class Registration:
    """One thing a plugin registered: an engine, parser, modality or transport."""

    # "engine" | "reasoning_parser" | "tool_call_parser" | "image_modality" | "video_modality"
    # | "audio_modality" | "transport" | "frontend"
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    options: list[Option] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    install_hint: str = ""
    description: str = ""
    passthrough_args: bool = False  # engines only: unknown `serve` args go to the engine
    kinds: tuple[str, ...] = ("chat",)  # engines only: the model kinds it serves (chat, embedding)
    enable_option: str = ""  # frontends only: the bool option that turns it on

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
        self._import_errors: dict[str, str] = {}
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
                info.error = self._import_errors[ep.name] = f"{type(exc).__name__}: {exc}"
        self._collected = False

    def register_module(self, module: Any, name: str) -> None:
        """Register an in-process plugin object (tests, embedding applications)."""
        self.pm.register(module, name=name)
        self.infos.setdefault(name, PluginInfo(name, "(in-process)", "", getattr(module, "__name__", name)))
        self._collected = False

    def _collect(self) -> None:
        if self._collected:
            return
        self._collected = True
        self._by_kind.clear()
        for info in self.infos.values():
            info.registrations.clear()
            info.error = self._import_errors.get(info.name)
        for hook_name, spec, add in (
            ("register_engines", hookspecs.RegisterEngine, self._add_engine),
            ("register_parsers", hookspecs.RegisterParser, self._add_parser),
            ("register_modalities", hookspecs.RegisterModality, self._add_modality),
            ("register_transports", hookspecs.RegisterTransport, self._add_transport),
            ("register_frontends", hookspecs.RegisterFrontend, self._add_frontend),
        ):
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin = impl.plugin_name
                try:
                    impl.function(register=_checked_register(spec, add, plugin, hook_name))
                except RegistrationError as exc:
                    self._record_error(plugin, str(exc))
                except Exception as exc:  # a plugin's own bug must not crash the core
                    self._record_error(plugin, f"plugin {plugin}: {hook_name}: {type(exc).__name__}: {exc}")

    def _record_error(self, plugin: str, message: str) -> None:
        info = self.infos.setdefault(plugin, PluginInfo(plugin, "?", "?", "?"))
        info.error = message if not info.error else f"{info.error}; {message}"

    # --- the register callables, one per hook (arguments already bound to the hook's signature) ---
    def _add_engine(self, plugin: str, hook: str, *, name: str, factory: Callable[..., Any],
                    options: Iterable[Option], requires: Iterable[str], install_hint: str, description: str,
                    passthrough_args: bool, kinds: Iterable[str]) -> None:
        where = f"plugin {plugin}: {hook}"
        _check_bool(passthrough_args, "passthrough_args", where)
        self._add(Registration("engine", _check_name(name, where), _check_factory(factory, where), plugin,
                               options=_check_options(options, where), requires=_check_strs(requires, where),
                               install_hint=_check_str(install_hint, "install_hint", where),
                               description=_check_str(description, "description", where),
                               passthrough_args=passthrough_args, kinds=_check_kinds(kinds, where)), where)

    def _add_parser(self, plugin: str, hook: str, *, kind: str, name: str, factory: Callable[..., Any]) -> None:
        where = f"plugin {plugin}: {hook}"
        if kind not in PARSER_KINDS:
            raise RegistrationError(f"{where}: parser kind must be 'reasoning' or 'tool_call', not {kind!r}")
        self._add(Registration(f"{kind}_parser", _check_name(name, where), _check_factory(factory, where), plugin),
                  where)

    def _add_modality(self, plugin: str, hook: str, *, kind: str, name: str, factory: Callable[..., Any],
                      options: Iterable[Option], requires: Iterable[str], install_hint: str,
                      description: str) -> None:
        where = f"plugin {plugin}: {hook}"
        if kind not in MODALITY_KINDS:
            raise RegistrationError(f"{where}: modality kind must be one of {', '.join(MODALITY_KINDS)}, "
                                    f"not {kind!r}")
        self._add(Registration(f"{kind}_modality", _check_name(name, where), _check_factory(factory, where),
                               plugin, options=_check_options(options, where), requires=_check_strs(requires, where),
                               install_hint=_check_str(install_hint, "install_hint", where),
                               description=_check_str(description, "description", where)), where)

    def _add_transport(self, plugin: str, hook: str, *, name: str, factory: Callable[..., Any],
                       requires: Iterable[str], install_hint: str, description: str) -> None:
        where = f"plugin {plugin}: {hook}"
        self._add(Registration("transport", _check_name(name, where), _check_factory(factory, where), plugin,
                               requires=_check_strs(requires, where),
                               install_hint=_check_str(install_hint, "install_hint", where),
                               description=_check_str(description, "description", where)), where)

    def _add_frontend(self, plugin: str, hook: str, *, name: str, factory: Callable[..., Any], enable_option: str,
                      options: Iterable[Option], requires: Iterable[str], install_hint: str,
                      description: str) -> None:
        where = f"plugin {plugin}: {hook}"
        opts = _check_options(options, where)
        switch = [o for o in opts if o.name == enable_option]
        if not switch or switch[0].type is not bool or switch[0].default is not False:
            raise RegistrationError(f"{where}: enable_option must name one of the frontend's options, a bool with "
                                    f"default False, not {enable_option!r}")
        self._add(Registration("frontend", _check_name(name, where), _check_factory(factory, where), plugin,
                               options=opts, requires=_check_strs(requires, where),
                               install_hint=_check_str(install_hint, "install_hint", where),
                               description=_check_str(description, "description", where),
                               enable_option=enable_option), where)

    def _add(self, reg: Registration, where: str) -> None:
        regs = self._by_kind.setdefault(reg.kind, {})
        prior = regs.get(reg.name)
        if prior is not None:
            raise RegistrationError(f"{where}: {_kind_label(reg.kind)} {reg.name!r} is already registered by "
                                    f"plugin {prior.plugin}")
        regs[reg.name] = reg
        self.infos.setdefault(reg.plugin, PluginInfo(reg.plugin, "?", "?", "?")).registrations.append(reg)

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
            raise LookupError(f"unknown {_kind_label(kind)} {name!r}{hint}; available: {avail}")
        return regs[name]

    def modality(self, kind: str, name: str | None = None) -> Registration:
        """The media generator registered for models of `kind` (image | video | audio), by name or the only one."""
        if kind not in MODALITY_KINDS:
            raise LookupError(f"unknown modality kind {kind!r}; kinds: {', '.join(MODALITY_KINDS)}")
        if name is not None:
            return self.get(f"{kind}_modality", name)
        regs = self.registered(f"{kind}_modality")
        if len(regs) == 1:
            return next(iter(regs.values()))
        if regs:
            raise LookupError(f"several {kind} modalities are registered ({', '.join(sorted(regs))}): name one")
        existing = "; ".join(f"{k}: {', '.join(sorted(r))}" for k in MODALITY_KINDS
                             if (r := self.registered(f"{k}_modality")))
        raise LookupError(f"no {kind} modality is registered (install a plugin that registers one; see "
                          f"`dynamo-mono plugins`); available: {existing or 'none'}")

    def backend_names(self) -> list[str]:
        """Every name `--engine` accepts: engines and media generators (one name may be both)."""
        names = set(self.registered("engine"))
        for k in MODALITY_KINDS:
            names.update(self.registered(f"{k}_modality"))
        return sorted(names)

    def backend_options(self, name: str) -> list[Option]:
        """The options of `--engine NAME`: its engine registration's and those of the media generators registered
        under that name, deduplicated by option name (none when the name is unknown)."""
        regs = [r for r in (self.registered("engine").get(name),
                            *(self.registered(f"{k}_modality").get(name) for k in MODALITY_KINDS)) if r is not None]
        seen: dict[str, Option] = {}
        for reg in regs:
            for opt in reg.options:
                seen.setdefault(opt.name, opt)
        return list(seen.values())

    def add_routes(self, app: Any) -> None:
        self.pm.hook.register_routes(app=app)

    def add_cli(self, subparsers: Any, engine: str = "mocker") -> None:
        self.pm.hook.register_cli(parser=subparsers, engine=engine)


def _kind_label(kind: str) -> str:
    return kind.replace("_", " ")


def _checked_register(spec: type, add: Callable[..., None], plugin: str, hook: str) -> Callable[..., None]:
    """A `register` callable with the spec's signature; wrong arguments raise RegistrationError naming the plugin."""
    sig = inspect.signature(spec.__call__)
    sig = sig.replace(parameters=list(sig.parameters.values())[1:])  # drop self

    def register(*args: Any, **kwargs: Any) -> None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise RegistrationError(f"plugin {plugin}: {hook}: {_bind_problem(sig, kwargs, exc)}") from None
        bound.apply_defaults()
        add(plugin, hook, **bound.arguments)

    register.__signature__ = sig  # type: ignore[attr-defined]
    register.__doc__ = spec.__call__.__doc__
    return register


def _bind_problem(sig: inspect.Signature, kwargs: dict[str, Any], exc: TypeError) -> str:
    names = [n for n, p in sig.parameters.items() if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            return f"unexpected keyword {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    return str(exc)


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"{where}: name must be a non-empty string, not {name!r}")
    return name


def _check_factory(factory: Any, where: str) -> Callable[..., Any]:
    if not callable(factory):
        raise RegistrationError(f"{where}: factory must be callable, not {type(factory).__name__}")
    return factory


def _check_str(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise RegistrationError(f"{where}: {what} must be a string, not {type(value).__name__}")
    return value


def _check_bool(value: Any, what: str, where: str) -> None:
    if not isinstance(value, bool):
        raise RegistrationError(f"{where}: {what} must be True or False, not {value!r}")


def _check_strs(values: Any, where: str) -> list[str]:
    names = [] if isinstance(values, str) else _as_list(values, "requires", where)
    if isinstance(values, str) or not all(isinstance(v, str) for v in names):
        raise RegistrationError(f"{where}: requires must be a list of module names, not {values!r}")
    return names


def _check_kinds(values: Any, where: str) -> tuple[str, ...]:
    kinds = [] if isinstance(values, str) else _as_list(values, "kinds", where)
    bad = [k for k in kinds if k not in ENGINE_KINDS]
    if isinstance(values, str) or not kinds or bad:
        raise RegistrationError(f"{where}: kinds must be a non-empty list of {', '.join(ENGINE_KINDS)}, "
                                f"not {values!r}")
    return tuple(dict.fromkeys(kinds))


def _check_options(values: Any, where: str) -> list[Option]:
    opts = _as_list(values, "options", where)
    bad = [o for o in opts if not isinstance(o, Option)]
    if bad:
        raise RegistrationError(f"{where}: options must be Option instances, not {type(bad[0]).__name__}")
    return opts


def _as_list(values: Any, what: str, where: str) -> list[Any]:
    try:
        return list(values)
    except TypeError:
        raise RegistrationError(f"{where}: {what} must be a list, not {type(values).__name__}") from None


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded from entry points on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
        _plugins.load_entry_points()
    return _plugins
