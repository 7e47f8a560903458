"""Hook implementations: what this plugin registers with dynamo-mono."""

from dynamo_mono.api import Option, RegisterEngine, RegisterParser, hookimpl

from dynamo_mono_example.echo_engine import EchoEngine
from dynamo_mono_example.bracket_parser import BracketReasoningParser


@hookimpl
def register_engines(register: RegisterEngine) -> None:
    register(
        "echo",
        EchoEngine,
        options=[Option("echo_delay", float, 0.0, "Seconds between echoed tokens.", group="engine: echo", min=0)],
        description="echoes the prompt's last user turn back, token by token",
    )


@hookimpl
def register_parsers(register: RegisterParser) -> None:
    register("reasoning", "brackets", BracketReasoningParser)
