"""The `dynamo-mono` command: serve, profile, plugins, config-docs (and subcommands plugins add)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from dynamo_mono import __version__
from dynamo_mono.config import ConfigError, Option, add_to_parser, dedupe, markdown_table, resolve
from dynamo_mono.plugins import Plugins, get_plugins


def requested_engine(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The engine a command line asks for (--engine, else DYN_ENGINE, else the mocker): it decides which
    engine options the command accepts and shows in --help."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--engine")
    known, _ = pre.parse_known_args(list(argv))
    env = os.environ if env is None else env
    return known.engine or env.get("DYN_ENGINE") or "mocker"


def engine_options(plugins: Plugins, engine: str) -> list[Option]:
    """The options of one engine name: its engine registration's and those of the media generators registered
    under that name (none when it is unknown: `serve` then reports the unknown engine)."""
    return plugins.backend_options(engine)


def frontend_options(plugins: Plugins) -> list[Option]:
    """The options of every registered frontend (server options: they apply whichever engine serves)."""
    return [o for reg in plugins.registered("frontend").values() for o in reg.options]


def serve_options(plugins: Plugins, engine: str = "mocker") -> list[Option]:
    """Every option `serve --engine ENGINE` accepts: core, router, frontends, then that engine's own, in help
    order."""
    from dynamo_mono.options import CORE_OPTIONS
    from dynamo_mono.router.options import ROUTER_OPTIONS

    return dedupe([*CORE_OPTIONS, *ROUTER_OPTIONS, *frontend_options(plugins), *engine_options(plugins, engine)])


def option_clashes(plugins: Plugins, engine: str) -> list[str]:
    """Flags of `engine` that a server option of the same name would shadow (the engine's would never be read)."""
    from dynamo_mono.options import CORE_OPTIONS
    from dynamo_mono.router.options import ROUTER_OPTIONS

    server = {o.name: o for o in [*CORE_OPTIONS, *ROUTER_OPTIONS, *frontend_options(plugins)]}
    return [o.flag for o in engine_options(plugins, engine) if o.name in server and server[o.name] != o]


def _passthrough_allowed(plugins: Plugins, engine: str) -> bool:
    try:
        return plugins.get("engine", engine).passthrough_args
    except LookupError:
        return False


def cmd_serve(args: argparse.Namespace, parser: argparse.ArgumentParser, extra: list[str],
              plugins: Plugins, engine: str) -> int:
    options = serve_options(plugins, engine)
    cli = {o.name: getattr(args, o.name) for o in options if hasattr(args, o.name)}
    try:
        clashes = option_clashes(plugins, engine)
        if clashes:
            raise ConfigError(f"engine {engine!r} registers {', '.join(clashes)}, which the server already has: the "
                              "plugin must rename them")
        settings = resolve(options, cli, extra_args=extra)
        if extra and not _passthrough_allowed(plugins, settings.engine):
            raise ConfigError(f"unrecognized arguments: {' '.join(extra)}")
    except ConfigError as exc:
        print(f"dynamo-mono serve: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    _report_broken_plugins(plugins, settings.engine)
    from dynamo_mono.server import serve
    from dynamo_mono.uvloop_setup import run

    try:
        run(serve(settings, plugins))
    except ConfigError as exc:
        print(f"dynamo-mono serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _report_broken_plugins(plugins: Plugins, engine: str) -> None:
    log = logging.getLogger("dynamo_mono.plugins")
    for info in plugins.infos.values():
        if info.error:
            log.warning("plugin %s (%s) skipped: %s", info.name, info.distribution, info.error)


def cmd_plugins(args: argparse.Namespace, plugins: Plugins) -> int:
    plugins.registered("engine")  # collect registrations (and registration errors) of every kind
    for info in sorted(plugins.infos.values(), key=lambda i: i.name):
        status = "error" if info.error else "ok"
        print(f"{info.name}  ({info.distribution} {info.version}, {info.module})  [{status}]")
        if info.error:
            print(f"    failed to load: {info.error}")
        for reg in info.registrations:
            missing = reg.missing()
            usable = "usable" if not missing else f"unavailable: missing {', '.join(missing)}"
            hint = f"; install: {reg.install_hint}" if missing and reg.install_hint else ""
            desc = f" - {reg.description}" if reg.description else ""
            print(f"    {reg.kind:17s} {reg.name:24s} {usable}{hint}{desc}")
    return 0


def configuration_markdown(plugins: Plugins) -> str:
    """docs/configuration.md, generated from the option definitions of the core and built-in engines."""
    from dynamo_mono.options import CORE_OPTIONS
    from dynamo_mono.router.options import ROUTER_OPTIONS

    head = ("# Configuration reference\n\n"
            "Generated by `dynamo-mono config-docs` from the option definitions; do not edit by hand.\n\n"
            "Every option is a CLI flag of `dynamo-mono serve`, an environment variable and a default, "
            "in that precedence (CLI > env > default). Values are validated at startup; a bad value stops "
            "the server with a one-line error naming the option and its allowed range. Boolean flags take "
            "`--flag` / `--no-flag`; boolean env vars accept true/false/1/0/yes/no/on/off.\n\n"
            "Engine options belong to one engine: `serve --engine NAME` accepts NAME's options and "
            "`serve --engine NAME --help` lists them with NAME's defaults. In a `--config` file they go under "
            "each model's `options:` key.\n\n")
    text = head + markdown_table(dedupe([*CORE_OPTIONS, *ROUTER_OPTIONS]))
    for name, reg in sorted(plugins.registered("engine").items()):
        options = plugins.backend_options(name)
        if reg.plugin in _BUILTIN_PLUGINS and options:
            text += f"\n# Engine `{name}`\n\n" + markdown_table(options)
    return text


_BUILTIN_PLUGINS = {"mocker", "builtin_parsers", "tcp"}


def cmd_config_docs(args: argparse.Namespace, plugins: Plugins) -> int:
    text = configuration_markdown(plugins)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser(plugins: Plugins, engine: str = "mocker") -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="dynamo-mono", description="LLM inference server with pluggable engines.")
    parser.add_argument("--version", action="version", version=f"dynamo-mono {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve models over the OpenAI and Anthropic APIs",
                           description="Serve a model. Options are grouped by component; each is also an env var.")
    add_to_parser(serve, serve_options(plugins, engine))
    sub.add_parser("plugins", help="list plugins, what they register and whether they are usable")
    docs = sub.add_parser("config-docs", help="print the configuration reference (Markdown)")
    docs.add_argument("--output", "-o", help="write to this file instead of stdout")
    from dynamo_mono.profiler.command import profile_options

    prof = sub.add_parser("profile", help="sweep an engine instance and write its planner profile (Dynamo's layout)",
                          description="Measure one engine instance in-process: TTFT per prompt length and ITL per "
                                      "decode load; write the profile the planner and the mocker read.")
    add_to_parser(prof, profile_options(plugins, engine))
    plugins.add_cli(sub, engine)
    return parser, serve


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plugins = get_plugins()
    engine = requested_engine(argv)
    parser, serve_parser = build_parser(plugins, engine)
    args, extra = parser.parse_known_args(argv)
    if args.command == "serve":
        return cmd_serve(args, serve_parser, extra, plugins, engine)
    if args.command == "profile":
        from dynamo_mono.profiler.command import cmd_profile

        return cmd_profile(args, extra, plugins, engine)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "plugins":
        return cmd_plugins(args, plugins)
    if args.command == "config-docs":
        return cmd_config_docs(args, plugins)
    handler = getattr(args, "handler", None)
    if handler is not None:  # subcommands added by plugins set a handler
        return int(handler(args) or 0)
    parser.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
