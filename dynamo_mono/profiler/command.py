"""`dynamo-mono profile`: resolve the engine and its options the way `serve` and `worker` do, start one instance,
run the sweep, write the profile (NPZ in Dynamo's layout, profile.json, profile.png)."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dynamo_mono.config import ConfigError, Option, Settings, dedupe, resolve
from dynamo_mono.engine import Engine
from dynamo_mono.profiler.data import DecodeProfile, PrefillProfile, Profile, ttft_intercept, write_profile
from dynamo_mono.profiler.measure import (DecodeResult, PrefillResult, Prompts, ProfileError, decode_sample,
                                          prefill_batch_sample, prefill_sample, run_request, seq_overhead_ms)
from dynamo_mono.profiler.options import PROFILE_OPTIONS
from dynamo_mono.profiler.plan import DecodePoint, SweepPlan, plan_sweep

log = logging.getLogger("dynamo_mono.profiler")

# Model options that mean something for one profiled chat instance (not --num-instances, --model-kind, parsers).
_MODEL_OPTION_NAMES = ("engine", "model", "served_model_name", "max_model_len", "chat_template")


def profile_options(plugins: Any, engine: str = "mocker") -> list[Option]:
    """Every option `profile --engine ENGINE` accepts: the sweep's, the model's, then that engine's own."""
    from dynamo_mono.options import CORE_OPTIONS, MODEL_OPTIONS

    model = [o for o in MODEL_OPTIONS if o.name in _MODEL_OPTION_NAMES]
    log_level = [o for o in CORE_OPTIONS if o.name == "log_level"]
    return dedupe([*PROFILE_OPTIONS, *model, *log_level, *plugins.backend_options(engine)])


class _Progress:
    """tqdm on stderr when asked for, else nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="profiling", unit="pt", file=sys.stderr, dynamic_ncols=True)

    def tick(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def sweep(engine: Engine, plan: SweepPlan, vocab_size: int, seed: int = 0, progress: bool = False,
                on_point: Callable[[str], None] | None = None) -> Profile:
    """Measure every point of the plan on one started chat instance."""
    prompts = Prompts(vocab_size, seed)
    bar = _Progress(plan.warmup + (len(plan.prefill_isl) + len(plan.prefill_batch_isl) + len(plan.decode))
                    * plan.repeats, progress)
    try:
        for _ in range(plan.warmup):
            await run_request(engine, prompts.make(min(plan.prefill_isl[-1], plan.max_context_length - 8)), 8)
            bar.tick()
        # Rounds over all points rather than all repeats of one point in a row: a machine whose speed drifts
        # (shared hosts) then shifts every point alike instead of bending the curves.
        singles: dict[int, list[float]] = {isl: [] for isl in plan.prefill_isl}
        batches: dict[int, list[float]] = {isl: [] for isl in plan.prefill_batch_isl}
        itls: dict[DecodePoint, list[float]] = {p: [] for p in plan.decode}
        cap = plan.max_context_length
        for rnd in range(plan.repeats):
            bar.note(f"prefill, round {rnd + 1}/{plan.repeats}")
            for isl in plan.prefill_isl:
                singles[isl].append(await prefill_sample(engine, prompts, isl, cap))
                bar.tick()
            for isl in plan.prefill_batch_isl:
                batches[isl].append(await prefill_batch_sample(engine, prompts, isl, plan.prefill_batch, cap))
                bar.tick()
        for rnd in range(plan.repeats):
            bar.note(f"decode, round {rnd + 1}/{plan.repeats}")
            for point in plan.decode:
                itls[point].append(await decode_sample(engine, prompts, point, plan.decode_osl, cap))
                bar.tick()
    finally:
        bar.close()
    prefill = [PrefillResult(isl, statistics.median(v)) for isl, v in singles.items()]
    batched = {isl: statistics.median(v) for isl, v in batches.items()}
    decode = [DecodeResult(p, statistics.median(v), float(p.concurrency * p.context_length))
              for p, v in itls.items()]
    for r in prefill:
        if on_point:
            on_point(f"prefill isl={r.isl}: ttft {r.ttft_ms:.2f} ms, {r.thpt:.0f} tok/s"
                     + (f"; x{plan.prefill_batch} at once: {batched[r.isl]:.2f} ms" if r.isl in batched else ""))
    for r in decode:
        if on_point:
            on_point(f"decode ctx={r.point.context_length} n={r.point.concurrency}: itl {r.itl_ms:.2f} ms, "
                     f"{r.thpt:.0f} tok/s")
    isl_arr, ttft_arr = np.array([r.isl for r in prefill], float), np.array([r.ttft_ms for r in prefill])
    overhead = (seq_overhead_ms(prefill, batched, plan.prefill_batch, ttft_intercept(isl_arr, ttft_arr))
                if batched else None)
    return Profile(
        PrefillProfile(isl_arr, ttft_arr, np.array([r.thpt for r in prefill]), overhead),
        DecodeProfile(np.array([r.kv_tokens / plan.max_kv_tokens for r in decode]),
                      np.array([r.point.context_length for r in decode], float),
                      np.array([r.itl_ms for r in decode]), np.array([r.thpt for r in decode]),
                      plan.max_kv_tokens))


def write_all(out_dir: Path, profile: Profile, facts: dict[str, Any], plot: bool) -> list[Path]:
    """NPZ files, profile.json (what was profiled, how) and, when asked, profile.png; the paths written."""
    paths = list(write_profile(out_dir, profile))
    meta = out_dir / "profile.json"
    meta.write_text(json.dumps(facts, indent=2, default=str) + "\n", encoding="utf-8")
    paths.append(meta)
    if plot:
        from dynamo_mono.profiler.plot import plot_profile

        png = out_dir / "profile.png"
        plot_profile(profile, png, title=f"{facts['engine']} {facts['model']}")
        paths.append(png)
    return paths


def profile_settings(plugins: Any, engine: str, cli: dict[str, Any], extra: list[str] | None = None,
                     env: dict[str, str] | None = None) -> Settings:
    """Resolve `profile --engine ENGINE` options from CLI values (by option name), env and defaults."""
    settings = resolve(profile_options(plugins, engine), cli, env=env, extra_args=extra)
    if extra and not _passthrough_allowed(plugins, settings.engine):
        raise ConfigError(f"unrecognized arguments: {' '.join(extra)}")
    return settings


async def start_instance(settings: Settings, plugins: Any) -> tuple[Engine, Any]:
    """One started chat instance of the configured engine (the path `serve` and `worker` take) and its ModelInfo."""
    from dynamo_mono.model_spec import spec_from_settings
    from dynamo_mono.serving.launch import engine_registration, load_model, start_engines

    full = settings.replace(num_instances=1, model_kind="chat", reasoning_parser=None, tool_call_parser=None)
    spec = replace(spec_from_settings(full, plugins.backend_options(settings.engine)), instances=1)
    reg = engine_registration(plugins, spec)
    info = load_model(spec)
    engines = await start_engines(reg, spec, info)
    return engines[0], info


async def run_profile(settings: Settings, plugins: Any) -> list[Path]:
    """Start one instance of the configured engine, sweep it, stop it, write the profile."""
    from dynamo_mono.serving.launch import stop_all

    if settings.plot:  # fail before sweeping, not after
        import importlib.util

        from dynamo_mono.profiler.plot import INSTALL_HINT

        if importlib.util.find_spec("matplotlib") is None:
            raise ConfigError(INSTALL_HINT)
    engine, info = await start_instance(settings, plugins)
    vocab = info.tokenizer.vocab_size if info.tokenizer is not None else 0
    try:
        card = engine.model_card()
        plan = plan_sweep(settings, card)
        log.info("profiling %s (%s): prefill ISL %s; decode %d points, KV cache %d tokens", settings.engine,
                 info.name, plan.prefill_isl, len(plan.decode), plan.max_kv_tokens)
        profile = await sweep(engine, plan, vocab, settings.profile_seed, settings.progress, log.info)
    finally:
        await stop_all([engine])
    engine_opts = {o.name: settings.get(o.name) for o in plugins.backend_options(settings.engine)}
    facts = {"engine": settings.engine, "model": info.name, "model_path": info.path,
             "engine_options": {k: v for k, v in engine_opts.items() if v is not None},
             "extra_args": list(settings.extra_args), "block_size": card.block_size,
             "total_kv_blocks": card.total_kv_blocks, "max_num_seqs": card.max_num_seqs,
             "max_num_batched_tokens": card.max_num_batched_tokens, "max_model_len": card.max_model_len,
             "plan": asdict(plan)}
    return write_all(Path(settings.output_dir), profile, facts, settings.plot)


def _passthrough_allowed(plugins: Any, engine: str) -> bool:
    try:
        return bool(plugins.get("engine", engine).passthrough_args)
    except LookupError:
        return False


def cmd_profile(args: argparse.Namespace, extra: list[str], plugins: Any, engine: str) -> int:
    """Entry of `dynamo-mono profile`: 0 when the profile was written, 2 on bad configuration, 1 on engine failure."""
    from dynamo_mono.uvloop_setup import run

    options = profile_options(plugins, engine)
    try:
        settings = profile_settings(plugins, engine, {o.name: getattr(args, o.name) for o in options
                                                      if hasattr(args, o.name)}, extra)
    except ConfigError as exc:
        print(f"dynamo-mono profile: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, settings.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        paths = run(run_profile(settings, plugins))
    except ConfigError as exc:
        print(f"dynamo-mono profile: error: {exc}", file=sys.stderr)
        return 2
    except ProfileError as exc:
        print(f"dynamo-mono profile: failed: {exc}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0
