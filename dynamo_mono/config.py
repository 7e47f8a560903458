"""Option definitions and their resolution: CLI flag > env var DYN_<NAME> > default, validated once."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A one-line, user-facing configuration error."""


@dataclass(frozen=True)
class Option:
    """One configurable setting: CLI flag `--name-with-dashes`, env `DYN_NAME`, a default and its bounds."""

    name: str
    type: type
    default: Any
    help: str
    group: str = "server"
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    aliases: tuple[str, ...] = ()  # further accepted flags, e.g. Dynamo's spellings
    deprecated_aliases: tuple[str, ...] = ()  # accepted with a warning
    env: str | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_var(self) -> str:
        return self.env or "DYN_" + self.name.upper()

    def parse_env(self, raw: str) -> Any:
        """Convert an env var string to the option's type (ConfigError on nonsense)."""
        if self.type is bool:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ConfigError(f"invalid {self.env_var}={raw!r}: expected one of true/false/1/0/yes/no/on/off")
        if raw.strip().lower() in ("", "none") and self.default is None:
            return None
        try:
            return self.type(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"invalid {self.env_var}={raw!r}: expected {self.type.__name__}") from None

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo, hi = self.min, self.max
        if lo is not None and hi is not None:
            return f"between {lo:g} and {hi:g}" if not self.min_exclusive else f"> {lo:g} and <= {hi:g}"
        if lo is not None:
            return f"> {lo:g}" if self.min_exclusive else f">= {lo:g}"
        if hi is not None:
            return f"<= {hi:g}"
        return self.type.__name__

    def validate(self, value: Any, source: str) -> Any:
        if value is None:
            if self.default is None:
                return None
            raise ConfigError(f"invalid {source}: a value is required")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"invalid {source}={value!r}: must be {self.describe_range()}")
        if self.type in (int, float) and not isinstance(value, bool):
            bad = (
                (self.min is not None and (value <= self.min if self.min_exclusive else value < self.min))
                or (self.max is not None and value > self.max)
            )
            if bad:
                raise ConfigError(f"invalid {source}={value!r}: must be {self.describe_range()}")
        return value


class Settings:
    """Resolved option values with attribute access; `.source(name)` tells where a value came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str], extra_args: list[str] | None = None):
        self._values = values
        self._sources = sources
        self.extra_args = extra_args or []

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def source(self, name: str) -> str:
        return self._sources.get(name, "default")

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any) -> "Settings":
        values = dict(self._values)
        values.update(changes)
        return Settings(values, dict(self._sources), list(self.extra_args))


def dedupe(options: Iterable[Option]) -> list[Option]:
    """Drop later definitions of an option name (engines may share e.g. --block-size)."""
    seen: dict[str, Option] = {}
    for opt in options:
        seen.setdefault(opt.name, opt)
    return list(seen.values())


def add_to_parser(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add options to an argparse parser, one argument group per Option.group, defaults suppressed."""
    groups: dict[str, Any] = {}
    for opt in options:
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group)
        flags = [opt.flag, *opt.aliases, *opt.deprecated_aliases]
        default_txt = "unset" if opt.default is None else str(opt.default)
        help_txt = f"{opt.help} [env {opt.env_var}; default {default_txt}]"
        if opt.type is bool:
            group.add_argument(*flags, dest=opt.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_txt)
        else:
            group.add_argument(*flags, dest=opt.name, type=_argtype(opt), default=argparse.SUPPRESS,
                               metavar=opt.metavar or opt.name.upper(), help=help_txt)


def _argtype(opt: Option) -> Any:
    def convert(raw: str) -> Any:
        if raw.lower() == "none" and opt.default is None:
            return None
        try:
            return opt.type(raw)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {opt.type.__name__}, got {raw!r}") from None

    convert.__name__ = opt.type.__name__
    return convert


def resolve(
    options: Sequence[Option],
    cli: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Settings:
    """Merge CLI values (only those given), env vars and defaults; validate every option."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in options:
        if opt.name in cli:
            value, src, where = cli[opt.name], "cli", opt.flag
        elif opt.env_var in env:
            value, src, where = opt.parse_env(env[opt.env_var]), "env", opt.env_var
        else:
            value, src, where = opt.default, "default", opt.flag
        values[opt.name] = opt.validate(value, where)
        sources[opt.name] = src
    return Settings(values, sources, extra_args)


def defaults(options: Sequence[Option]) -> Settings:
    """Settings with every option at its default (tests, embedding)."""
    return resolve(options, {}, env={})


def markdown_table(options: Sequence[Option]) -> str:
    """Reference documentation of options, grouped, as Markdown."""
    lines: list[str] = []
    by_group: dict[str, list[Option]] = {}
    for opt in options:
        by_group.setdefault(opt.group, []).append(opt)
    for group, opts in by_group.items():
        lines += [f"## {group}", "", "| flag | env | default | allowed | description |", "|---|---|---|---|---|"]
        for o in opts:
            flag = f"`{o.flag}`" if o.type is not bool else f"`{o.flag}` / `--no-{o.flag[2:]}`"
            if o.aliases:
                flag += " (also " + ", ".join(f"`{a}`" for a in o.aliases) + ")"
            default = "unset" if o.default is None else f"`{o.default}`"
            lines.append(f"| {flag} | `{o.env_var}` | {default} | {o.describe_range()} | {o.help} |")
        lines.append("")
    return "\n".join(lines)


@dataclass
class OptionSet:
    """Options collected from the core, the router and each engine, in help order."""

    options: list[Option] = field(default_factory=list)

    def extend(self, opts: Iterable[Option]) -> None:
        self.options = dedupe([*self.options, *opts])
