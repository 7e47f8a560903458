"""Options: CLI > env > default, one-line validation errors, grouped help, generated docs are current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dynamo_mono.cli import build_parser, configuration_markdown, serve_options
from dynamo_mono.config import ConfigError, Option, resolve
from dynamo_mono.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[1]


def _settings(argv: list[str], env: dict[str, str]):
    plugins = get_plugins()
    parser, serve = build_parser(plugins)
    args, extra = parser.parse_known_args(["serve", *argv])
    opts = serve_options(plugins)
    return resolve(opts, {o.name: getattr(args, o.name) for o in opts if hasattr(args, o.name)}, env=env)


def test_precedence_cli_env_default() -> None:
    s = _settings([], {})
    assert s.port == 8000 and s.source("port") == "default"
    s = _settings([], {"DYN_PORT": "9001"})
    assert s.port == 9001 and s.source("port") == "env"
    s = _settings(["--port", "9002"], {"DYN_PORT": "9001"})
    assert s.port == 9002 and s.source("port") == "cli"


def test_bool_flags_and_env() -> None:
    assert _settings([], {}).anthropic_api is True
    assert _settings(["--no-anthropic-api"], {}).anthropic_api is False
    assert _settings([], {"DYN_ANTHROPIC_API": "off"}).anthropic_api is False
    with pytest.raises(ConfigError, match="DYN_ANTHROPIC_API"):
        _settings([], {"DYN_ANTHROPIC_API": "maybe"})


def test_aliases_of_dynamo_names() -> None:
    s = _settings(["--dyn-reasoning-parser", "basic", "--http-port", "1234"], {})
    assert s.reasoning_parser == "basic" and s.port == 1234
    assert _settings([], {"DYN_MIGRATION_LIMIT": "3"}).migration_limit == 3


@pytest.mark.parametrize("argv,env,needle", [
    (["--port", "70000"], {}, "--port=70000: must be between 0 and 65535"),
    ([], {"DYN_PORT": "abc"}, "DYN_PORT='abc': expected int"),
    (["--migration-limit", "-1"], {}, "--migration-limit=-1"),
    (["--block-size", "1"], {}, "--block-size=1: must be >= 2"),
    (["--speedup-ratio", "-1"], {}, "--speedup-ratio"),
])
def test_validation_errors_name_option_and_range(argv, env, needle) -> None:
    with pytest.raises(ConfigError) as e:
        _settings(argv, env)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_serve_rejects_bad_value_with_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "serve", "--port", "99999"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "--port" in r.stderr and "65535" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "serve", "--engine", "nope"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown engine 'nope'" in r.stderr and "mocker" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "serve", "--port", "0",
                        "--tool-call-parser", "nope"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "hermes" in r.stderr


def test_help_grouped_by_component() -> None:
    r = subprocess.run([sys.executable, "-m", "dynamo_mono.cli", "serve", "--help"], capture_output=True,
                       text=True, timeout=60)
    for group in ("http server:", "model:", "parsers:", "router:", "engine: mocker:", "lifecycle:"):
        assert group in r.stdout, group
    assert "DYN_NUM_GPU_BLOCKS_OVERRIDE" in r.stdout


def test_configuration_doc_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert doc == configuration_markdown(get_plugins()), \
        "docs/configuration.md is stale: run `dynamo-mono config-docs -o docs/configuration.md`"


def test_option_range_text() -> None:
    o = Option("x", float, 1.0, "x", min=0, max=1)
    assert o.describe_range() == "between 0 and 1"
    with pytest.raises(ConfigError, match="--x=2"):
        o.validate(2.0, "--x")



def test_no_engine_option_is_shadowed_by_a_server_option() -> None:
    from dynamo_mono.cli import option_clashes
    from dynamo_mono.plugins import get_plugins

    plugins = get_plugins()
    assert {name: option_clashes(plugins, name) for name in plugins.backend_names()} == \
        {name: [] for name in plugins.backend_names()}
