"""Wiring `serve --planner` into the server: check the options, adjust the model spec, start and stop the planner."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dynamo_mono.config import ConfigError, Settings
from dynamo_mono.model_spec import ModelSpec
from dynamo_mono.planner.config import PlannerConfig
from dynamo_mono.planner.connectors import make_connector
from dynamo_mono.planner.interpolation import load_profile_dir
from dynamo_mono.planner.loop import Planner
from dynamo_mono.planner.metrics import PlannerMetrics
from dynamo_mono.planner.observe import FrontendObserver, server_exposition
from dynamo_mono.planner.options import PLANNER_OPTIONS


def prepare_specs(settings: Settings, specs: list[ModelSpec]) -> list[ModelSpec]:
    """Before any engine starts: ConfigError for planner options without --planner or a setup the planner cannot
    plan; in disaggregated mode the model's startup instances become decode instances."""
    if not settings.get("planner"):
        given = [o.flag if settings.source(o.name) == "cli" else o.env_var for o in PLANNER_OPTIONS
                 if o.name != "planner" and settings.source(o.name) in ("cli", "env")]
        if given:
            raise ConfigError(f"{', '.join(given)} apply only with --planner")
        return specs
    cfg = PlannerConfig.from_settings(settings)
    if len(specs) != 1 or specs[0].kind != "chat":
        raise ConfigError("--planner plans one chat model: serve exactly one (not a --config list of several)")
    spec = specs[0]
    if cfg.enable_throughput_scaling:
        load_profile_dir(cfg.profile_results_dir or "")  # a bad profile fails before the engines start
    if cfg.mode == "disagg":
        mode = spec.engine_options.get("disaggregation_mode")
        if mode is None:
            raise ConfigError(f"--planner-mode disagg: engine {spec.engine!r} has no --disaggregation-mode option")
        if mode not in ("agg", "decode"):
            raise ConfigError(f"--planner-mode disagg: the startup instances are decode instances; drop "
                              f"--disaggregation-mode {mode}")
        spec = replace(spec, engine_options={**spec.engine_options, "disaggregation_mode": "decode"})
    elif spec.engine_options.get("disaggregation_mode", "agg") != "agg":
        raise ConfigError("--planner-mode agg plans whole-request instances; use --planner-mode disagg with "
                          "--disaggregation-mode")
    return [spec]


async def start_planner(state: Any, specs: list[ModelSpec]) -> Planner | None:
    """The running planner of the served model (None without --planner): instances brought into bounds, loops
    started."""
    settings = state.settings
    if not settings.get("planner"):
        return None
    from dynamo_mono.serving.launch import engine_registration

    cfg = PlannerConfig.from_settings(settings)
    spec = specs[0]
    model = next(m for m in state.models.values() if m.configured and m.kind == "chat" and m.parent is None)
    profiles = load_profile_dir(cfg.profile_results_dir) if cfg.enable_throughput_scaling else None
    metrics = PlannerMetrics(state.metrics.registry, model.name)
    planner_ref: list[Planner] = []
    connector = make_connector(cfg.connector, state, model,
                               reg=engine_registration(state.plugins, spec) if cfg.connector == "local" else None,
                               spec=spec, command=cfg.command, command_timeout=cfg.command_timeout,
                               drain_timeout=cfg.drain_timeout,
                               on_change=lambda: planner_ref and planner_ref[0].export_instances())
    observers = [FrontendObserver(state.metrics, model.name, server_exposition(state)) for _ in range(2)]
    for obs in observers:
        await obs.start()
    planner = Planner(cfg, model, connector, metrics, *observers, profiles)
    planner_ref.append(planner)
    await planner.ensure_bounds()
    planner.start()
    return planner
