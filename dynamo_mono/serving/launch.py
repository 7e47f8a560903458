"""Starting a model's local engine instances: the one path `serve` and `worker` share."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import MEDIA_KINDS, Engine, EngineArgs
from dynamo_mono.model_spec import ModelSpec
from dynamo_mono.preprocess.model_dir import ModelInfo, load_model_dir

log = logging.getLogger("dynamo_mono.launch")


def engine_registration(plugins: Any, spec: ModelSpec, *, need_installed: bool = True) -> Any:
    """The plugin registration that builds the spec's instances: an engine (chat, embedding) or the media generator
    registered under that name for the spec's media kind; ConfigError when unknown, when it does not serve the
    spec's kind of model, or when its dependencies are missing."""
    served = _kinds_served(plugins, spec.engine)
    if not served:
        try:
            plugins.get("engine", spec.engine)
        except LookupError as exc:
            raise ConfigError(f"invalid --engine={spec.engine!r}: {exc}; media generators: "
                              f"{', '.join(_media_names(plugins)) or 'none'}") from None
    if spec.kind not in served:
        raise ConfigError(f"engine {spec.engine!r} does not serve {spec.kind} models (it serves: "
                          f"{', '.join(served)}); pick an engine registered for kind {spec.kind!r}"
                          + (" or pass --model-kind" if spec.kind == "chat" else ""))
    reg = plugins.modality(spec.kind, spec.engine) if spec.kind in MEDIA_KINDS else plugins.get("engine", spec.engine)
    if spec.kind != "chat":
        given = [k for k in ("chat_template", "reasoning_parser", "tool_call_parser") if getattr(spec, k) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to chat models only, not to {spec.kind} models")
    missing = reg.missing() if need_installed else []
    if missing:
        hint = f"; install with: {reg.install_hint}" if reg.install_hint else ""
        raise ConfigError(f"engine {spec.engine!r} needs {', '.join(missing)}, which is not installed{hint}")
    return reg


def _kinds_served(plugins: Any, name: str) -> list[str]:
    engine = plugins.registered("engine").get(name)
    kinds = list(engine.kinds) if engine is not None else []
    return kinds + [k for k in MEDIA_KINDS if name in plugins.registered(f"{k}_modality")]


def _media_names(plugins: Any) -> list[str]:
    return sorted({n for k in MEDIA_KINDS for n in plugins.registered(f"{k}_modality")})


def load_model(spec: ModelSpec) -> ModelInfo:
    """The model directory of a spec (tokenizer, template, context length); ConfigError on bad files. A media
    model has no tokenizer: its directory (if any) is the generator's to read."""
    if spec.kind in MEDIA_KINDS:
        return media_model_info(spec)
    return load_model_dir(spec.model, served_model_name=spec.name, chat_template_path=spec.chat_template,
                          max_model_len=spec.max_model_len)


def media_model_info(spec: ModelSpec) -> ModelInfo:
    """A media model's ModelInfo: its path and served name (default: the directory name, else ENGINE-KIND)."""
    path = ""
    if spec.model is not None:
        p = Path(spec.model).expanduser()
        if not p.exists():
            raise ConfigError(f"model path {spec.model!r} does not exist")
        path = str(p.resolve())
    name = spec.name or (Path(path).name if path else f"{spec.engine}-{spec.kind}")
    return ModelInfo(path=path, name=name, tokenizer=None, chat_template=None, max_model_len=0, eos_token_ids=[],
                     reasoning_parser=None, tool_call_parser=None)


async def start_engines(reg: Any, spec: ModelSpec, info: ModelInfo, *, first_id: int = 0) -> list[Engine]:
    """Build and start spec.instances engines concurrently; if one fails, stop those that started and raise."""
    engines: list[Engine] = []
    for i in range(spec.instances):
        args = EngineArgs(model_path=info.path, served_model_name=info.name, instance_id=first_id + i,
                          max_model_len=info.max_model_len, eos_token_ids=list(info.eos_token_ids),
                          vocab_size=info.tokenizer.vocab_size if info.tokenizer is not None else 0,
                          options=dict(spec.engine_options),
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
    if spec.kind in MEDIA_KINDS and not callable(getattr(engine, "generate_media", None)):
        raise ConfigError(f"the {spec.kind} generator {spec.engine!r} has no generate_media() method")


async def stop_all(engines: list[Engine]) -> None:
    """Stop engines, reporting (not raising) failures: used on shutdown and after a failed start."""
    for engine in engines:
        try:
            await engine.stop()
        except Exception:  # shutting down: report and go on
            log.exception("stopping an engine instance failed")
