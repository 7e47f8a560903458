"""Registers the `dynamo-mono worker` subcommand (entry point `worker = "dynamo_mono.worker.plugin"`)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from dynamo_mono.config import ConfigError, Option, add_to_parser, dedupe, resolve
from dynamo_mono.hookspecs import hookimpl


def worker_options(plugins: Any, engine: str = "mocker") -> list[Option]:
    """Every option `worker --engine ENGINE` accepts: connection, model, then that engine's own."""
    from dynamo_mono.options import MODEL_OPTIONS
    from dynamo_mono.worker.options import WORKER_COMMAND_OPTIONS

    return dedupe([*WORKER_COMMAND_OPTIONS, *MODEL_OPTIONS, *plugins.backend_options(engine)])


def cmd_worker(args: argparse.Namespace) -> int:
    from dynamo_mono.plugins import get_plugins
    from dynamo_mono.uvloop_setup import run
    from dynamo_mono.worker.process import run_worker

    plugins = get_plugins()
    options = worker_options(plugins, args.worker_engine)
    try:
        settings = resolve(options, {o.name: getattr(args, o.name) for o in options if hasattr(args, o.name)})
    except ConfigError as exc:
        print(f"dynamo-mono worker: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, settings.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(run(run_worker(settings, plugins)) or 0)
    except ConfigError as exc:
        print(f"dynamo-mono worker: error: {exc}", file=sys.stderr)
        return 2


@hookimpl
def register_cli(parser: Any, engine: str) -> None:
    from dynamo_mono.plugins import get_plugins

    p = parser.add_parser("worker", help="host engine instances for a remote server (scale-out)",
                          description="Start engine instances and serve them to a dynamo-mono server that "
                                      "this process dials (--connect).")
    add_to_parser(p, worker_options(get_plugins(), engine))
    p.set_defaults(handler=cmd_worker, worker_engine=engine)
