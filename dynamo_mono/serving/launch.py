"""Starting a model's local engine instances: the one path `serve` and `worker` share."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import Engine, EngineArgs
from dynamo_mono.model_spec import ModelSpec
from dynamo_mono.preprocess.model_dir import ModelInfo, load_model_dir

log = logging.getLogger("dynamo_mono.launch")


def engine_registration(plugins: Any, spec: ModelSpec, *, need_installed: bool = True) -> Any:
    """The engine plugin's registration for a spec; ConfigError when unknown, when it does not serve the spec's
    kind of model, or when its dependencies are missing."""
    try:
        reg = plugins.get("engine", spec.engine)
    except LookupError as exc:
        raise ConfigError(f"invalid --engine={spec.engine!r}: {exc}") from None
    if spec.kind not in reg.kinds:
        raise ConfigError(f"engine {spec.engine!r} does not serve {spec.kind} models (it serves: "
                          f"{', '.join(reg.kinds)}); pick an engine registered for kind {spec.kind!r}")
    if spec.kind != "chat":
        given = [k for k in ("chat_template", "reasoning_parser", "tool_call_parser") if getattr(spec, k) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to chat models only, not to {spec.kind} models")
    missing = reg.missing() if need_installed else []
    if missing:
        hint = f"; install with: {reg.install_hint}" if reg.install_hint else ""
        raise ConfigError(f"engine {spec.engine!r} needs {', '.join(missing)}, which is not installed{hint}")
    return reg


def load_model(spec: ModelSpec) -> ModelInfo:
    """The model directory of a spec (tokenizer, template, context length); ConfigError on bad files."""
    return load_model_dir(spec.model, served_model_name=spec.name, chat_template_path=spec.chat_template,
                          max_model_len=spec.max_model_len)


async def start_engines(reg: Any, spec: ModelSpec, info: ModelInfo, *, first_id: int = 0) -> list[Engine]:
    """Build and start spec.instances engines concurrently; if one fails, stop those that started and raise."""
    engines: list[Engine] = []
    for i in range(spec.instances):
        args = EngineArgs(model_path=info.path, served_model_name=info.name, instance_id=first_id + i,
                          max_model_len=info.max_model_len, eos_token_ids=list(info.eos_token_ids),
                          vocab_size=info.tokenizer.vocab_size, options=dict(spec.engine_options),
                          tokenizer=info.tokenizer, reasoning_parser=spec.reasoning_parser or info.reasoning_parser,
                          tool_call_parser=spec.tool_call_parser or info.tool_call_parser,
                          extra_args=list(spec.extra_args), kind=spec.kind)
        engines.append(reg.factory(args))
    results = await asyncio.gather(*(e.start() for e in engines), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if not failed:
        try:
            for engine in engines:
                check_instance(engine, spec)
        except ConfigError as exc:
            failed = [exc]
    if failed:
        await stop_all(engines)
        raise failed[0]
    return engines


def check_instance(engine: Engine, spec: ModelSpec) -> None:
    """ConfigError when a started instance does not serve the kind of model it was built for."""
    card = engine.model_card()
    if card.kind != spec.kind:
        raise ConfigError(f"engine {spec.engine!r} started a {card.kind} instance for the {spec.kind} model "
                          f"{card.name!r} (its card must say kind={spec.kind!r})")
    if spec.kind == "embedding" and not callable(getattr(engine, "embed", None)):
        raise ConfigError(f"engine {spec.engine!r} is registered for embedding models but has no embed() method")


async def stop_all(engines: list[Engine]) -> None:
    """Stop engines, reporting (not raising) failures: used on shutdown and after a failed start."""
    for engine in engines:
        try:
            await engine.stop()
        except Exception:  # shutting down: report and go on
            log.exception("stopping an engine instance failed")
