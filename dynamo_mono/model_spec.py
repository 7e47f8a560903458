"""What to serve: one typed ModelSpec per served model, from the CLI or from a `--config` YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from dynamo_mono.config import ConfigError, Option, Settings

# Kinds of served models: chat models serve chat, completions and messages; the others serve their own routes.
from dynamo_mono.engine import MODEL_KINDS

# Model-level keys of a config file entry (besides `options`, the engine's own options).
_ENTRY_KEYS = {"name", "engine", "model", "kind", "instances", "chat_template", "max_model_len",
               "reasoning_parser", "tool_call_parser", "options"}


@dataclass(frozen=True)
class ModelSpec:
    """One served model as configured: where its files are, which engine runs it, and that engine's options."""

    engine: str = "mocker"
    model: str | None = None  # model directory; None = the embedded tiny ChatML model
    name: str | None = None  # served name; None = from the directory
    kind: str = "chat"
    instances: int = 1
    chat_template: str | None = None
    max_model_len: int | None = None
    reasoning_parser: str | None = None  # explicit choice; None = what the engine / model files say
    tool_call_parser: str | None = None
    engine_options: dict[str, Any] = field(default_factory=dict)  # resolved values of the engine's own options
    extra_args: tuple[str, ...] = ()  # pass-through arguments for engines that take them


def spec_from_settings(settings: Settings, engine_options: list[Option]) -> ModelSpec:
    """The single model of a plain `serve` / `worker` command line."""
    return ModelSpec(
        engine=settings.engine, model=settings.model, name=settings.served_model_name,
        kind=settings.get("model_kind") or "chat", instances=settings.num_instances,
        chat_template=settings.get("chat_template"), max_model_len=settings.max_model_len,
        reasoning_parser=settings.reasoning_parser, tool_call_parser=settings.tool_call_parser,
        engine_options={o.name: settings.get(o.name) for o in engine_options},
        extra_args=tuple(settings.extra_args),
    )


def specs_from_file(path: str, engine_options: Mapping[str, list[Option]],
                    env: Mapping[str, str] | None = None) -> list[ModelSpec]:
    """Parse a models file: a YAML list (or `{models: [...]}`) of entries; ConfigError names model and key."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML: {' '.join(str(exc).split())}") from None
    entries = doc.get("models") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and set(doc) - {"models"}:
        raise ConfigError(f"--config {path}: unknown top-level key(s) {sorted(set(doc) - {'models'})}; "
                          f"expected 'models'")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"--config {path}: expected a non-empty list of models (or 'models: [...]')")
    specs = [_entry(path, i, e, engine_options, env) for i, e in enumerate(entries)]
    names = [s.name or s.model or "tiny-chatml" for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--config {path}: model name(s) {dup} appear more than once; give each a distinct 'name'")
    return specs


def _entry(path: str, index: int, e: Any, engine_options: Mapping[str, list[Option]],
           env: Mapping[str, str] | None) -> ModelSpec:
    if not isinstance(e, dict):
        raise ConfigError(f"--config {path}: model #{index + 1} must be a mapping, not {type(e).__name__}")
    label = f"--config {path}: model '{e.get('name') or e.get('model') or '#' + str(index + 1)}'"
    unknown = sorted(set(e) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{label}: unknown key(s) {unknown}; allowed: {sorted(_ENTRY_KEYS)}")
    engine = _typed(label, "engine", e.get("engine", "mocker"), str)
    if engine not in engine_options:
        raise ConfigError(f"{label}: unknown engine {engine!r}; available: {sorted(engine_options)}")
    kind = _typed(label, "kind", e.get("kind", "chat"), str)
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{label}: kind {kind!r} must be one of {', '.join(MODEL_KINDS)}")
    instances = _typed(label, "instances", e.get("instances", 1), int)
    if instances < 0:
        raise ConfigError(f"{label}: instances={instances} must be >= 0")
    max_len = e.get("max_model_len")
    if max_len is not None and _typed(label, "max_model_len", max_len, int) < 16:
        raise ConfigError(f"{label}: max_model_len={max_len} must be >= 16")
    options = e.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{label}: 'options' must be a mapping of {engine}'s options")
    return ModelSpec(
        engine=engine, model=_opt_str(label, "model", e.get("model")), name=_opt_str(label, "name", e.get("name")),
        kind=kind, instances=instances, chat_template=_opt_str(label, "chat_template", e.get("chat_template")),
        max_model_len=max_len, reasoning_parser=_opt_str(label, "reasoning_parser", e.get("reasoning_parser")),
        tool_call_parser=_opt_str(label, "tool_call_parser", e.get("tool_call_parser")),
        engine_options=resolve_engine_options(label, engine, engine_options[engine], options, env),
    )


def resolve_engine_options(label: str, engine: str, options: list[Option], given: Mapping[str, Any],
                           env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An engine's options for one model: the file's value, else env DYN_<NAME>, else the engine's default."""
    import os

    env = os.environ if env is None else env
    by_name = {o.name: o for o in options}
    for key in given:
        if key.replace("-", "_") not in by_name:
            raise ConfigError(f"{label}: engine '{engine}' has no option {key!r}; "
                              f"its options: {', '.join(sorted(by_name)) or 'none'}")
    out: dict[str, Any] = {}
    for opt in options:
        where = f"{label}: options.{opt.name}"
        if opt.name in given or opt.name.replace("_", "-") in given:
            raw = given.get(opt.name, given.get(opt.name.replace("_", "-")))
            value = _coerce(where, opt, raw)
        elif opt.env_var in env:
            value, where = opt.parse_env(env[opt.env_var]), opt.env_var
        else:
            value = opt.default
        out[opt.name] = opt.validate(value, where)
    return out


def _coerce(where: str, opt: Option, raw: Any) -> Any:
    if raw is None:
        return None
    if opt.type is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"invalid {where}={raw!r}: expected true or false")
    if opt.type is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if opt.type is str and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return str(raw)
    if not isinstance(raw, opt.type) or isinstance(raw, bool):
        raise ConfigError(f"invalid {where}={raw!r}: expected {opt.type.__name__}")
    return raw


def _typed(label: str, key: str, value: Any, typ: type) -> Any:
    if not isinstance(value, typ) or isinstance(value, bool):
        raise ConfigError(f"{label}: '{key}' must be a {typ.__name__}, not {value!r}")
    return value


def _opt_str(label: str, key: str, value: Any) -> str | None:
    return None if value is None else _typed(label, key, value, str)
