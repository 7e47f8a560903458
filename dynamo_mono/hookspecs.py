"""Plugin hook specifications and the exact `register(...)` signature each `register_*` hook hands a plugin.

A plugin implements any subset of the hooks with `@hookimpl`. The `register` callables take explicit
parameters: a misspelt keyword, a missing argument or a bad value is recorded as that plugin's load
error (shown by `dynamo-mono plugins`), never a crash of the core.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal, Protocol

import pluggy

from dynamo_mono.config import Option

hookspec = pluggy.HookspecMarker("dynamo_mono")
hookimpl = pluggy.HookimplMarker("dynamo_mono")

ParserKind = Literal["reasoning", "tool_call"]
ModalityKind = Literal["image", "video", "audio"]
EngineKind = Literal["chat", "embedding"]
PARSER_KINDS: tuple[str, ...] = ("reasoning", "tool_call")
MODALITY_KINDS: tuple[str, ...] = ("image", "video", "audio")


class RegisterEngine(Protocol):
    """The `register` of `register_engines`."""

    def __call__(self, name: str, factory: Callable[..., Any], *, options: Iterable[Option] = (),
                 requires: Iterable[str] = (), install_hint: str = "", description: str = "",
                 passthrough_args: bool = False, kinds: Iterable[EngineKind] = ("chat",)) -> None:
        """Register engine `name`: factory(EngineArgs) -> Engine.

        options: the engine's own `serve` flags (scoped to it); requires: importable modules it needs
        (missing = listed as unavailable with install_hint); passthrough_args: unknown `serve` arguments
        are handed to the engine in EngineArgs.extra_args instead of being rejected; kinds: the model
        kinds it serves, "chat" (generate) and / or "embedding" (embed; EngineArgs.kind says which one
        an instance is built for). A model of another kind is refused at startup.
        """


class RegisterParser(Protocol):
    """The `register` of `register_parsers`."""

    def __call__(self, kind: ParserKind, name: str, factory: Callable[..., Any]) -> None:
        """Register parser `name`: kind "reasoning" (factory(**template_kwargs) -> ReasoningParser)
        or "tool_call" (factory(tools) -> ToolCallParser)."""


class RegisterModality(Protocol):
    """The `register` of `register_modalities`."""

    def __call__(self, kind: ModalityKind, name: str, factory: Callable[..., Any], *,
                 options: Iterable[Option] = (), requires: Iterable[str] = (), install_hint: str = "",
                 description: str = "") -> None:
        """Register media generator `name` for models of kind "image" | "video" | "audio".

        factory(EngineArgs) builds the generator for one model of that kind (the Engine shape, with
        media results); options, requires and install_hint work as for engines.
        """


class RegisterTransport(Protocol):
    """The `register` of `register_transports`."""

    def __call__(self, name: str, factory: Callable[..., Any], *, requires: Iterable[str] = (),
                 install_hint: str = "", description: str = "") -> None:
        """Register worker/KV transport `name`: factory(**kwargs) -> KvTransport."""


class Frontend(Protocol):
    """A server front door beside the HTTP server (e.g. KServe gRPC), built by a frontend factory."""

    async def start(self) -> None:
        """Start serving; called after every configured model is up. Raise ConfigError on a bad setting."""

    async def stop(self) -> None:
        """Stop serving; called at shutdown after in-flight requests drained (or --shutdown-timeout ran out)."""


class RegisterFrontend(Protocol):
    """The `register` of `register_frontends`."""

    def __call__(self, name: str, factory: Callable[..., Any], *, enable_option: str, options: Iterable[Option] = (),
                 requires: Iterable[str] = (), install_hint: str = "", description: str = "") -> None:
        """Register frontend `name`: factory(state) -> Frontend, where state is the server's ServerState.

        options: server options the frontend adds to `serve` (flags, env vars); enable_option: the name of one
        of them, a bool defaulting to False, that turns the frontend on (its other options are refused while it
        is off); requires / install_hint as for engines (enabling a frontend whose modules are missing stops
        the server with the hint).
        """


@hookspec
def register_engines(register: RegisterEngine) -> None:
    """Register engines: register(name, factory, *, options, requires, install_hint, description, passthrough_args,
    kinds)."""


@hookspec
def register_parsers(register: RegisterParser) -> None:
    """Register output parsers: register(kind, name, factory) with kind "reasoning" or "tool_call"."""


@hookspec
def register_modalities(register: RegisterModality) -> None:
    """Register media generators: register(kind, name, factory, *, options, requires, install_hint, description)."""


@hookspec
def register_transports(register: RegisterTransport) -> None:
    """Register worker/KV transports: register(name, factory, *, requires, install_hint, description)."""


@hookspec
def register_frontends(register: RegisterFrontend) -> None:
    """Register frontends: register(name, factory, *, enable_option, options, requires, install_hint, description)."""


@hookspec
def register_routes(app: Any) -> None:
    """Add HTTP routes to the aiohttp application before it starts."""


@hookspec
def register_cli(parser: Any, engine: str) -> None:
    """Add subcommands to the `dynamo-mono` argparse subparsers object (`engine`: the one the command line names)."""
