"""Planner options (`serve --planner`), with the Dynamo SLA planner's names and defaults where it has them."""

from __future__ import annotations

from dynamo_mono.config import Option

_G = "planner"
PREDICTORS = ("constant", "kalman")  # Dynamo also has arima and prophet: refused (not implemented here)
CONNECTORS = ("local", "command", "dry-run")
PLANNER_MODES = ("agg", "disagg")

PLANNER_OPTIONS: list[Option] = [
    Option("planner", bool, False, "Run the SLA planner: scale the model's engine instances to meet --ttft / --itl "
           "(docs/planner.md).", group=_G, env="DYN_PLANNER"),
    Option("planner_mode", str, "agg", "agg: one pool of whole-request instances; disagg: a prefill pool and a decode "
           "pool scaled separately (the engine needs --disaggregation-mode; the --num-instances instances started "
           "with the server are decode instances). Dynamo: mode", group=_G, choices=PLANNER_MODES,
           env="DYN_PLANNER_MODE"),
    Option("ttft", float, 500.0, "Planner: time-to-first-token target, ms.", group=_G, min=0, min_exclusive=True,
           env="DYN_PLANNER_TTFT"),
    Option("itl", float, 50.0, "Planner: inter-token-latency target, ms.", group=_G, min=0, min_exclusive=True,
           env="DYN_PLANNER_ITL"),
    Option("adjustment_interval", float, 180.0, "Planner: seconds between throughput-based scaling decisions "
           "(Dynamo: throughput_adjustment_interval).", group=_G, min=0, min_exclusive=True,
           aliases=("--throughput-adjustment-interval",), env="DYN_PLANNER_ADJUSTMENT_INTERVAL"),
    Option("min_instances", int, 1, "Planner: fewest instances per role (Dynamo: min_endpoint).", group=_G, min=1,
           aliases=("--min-endpoint",), env="DYN_PLANNER_MIN_INSTANCES"),
    Option("max_instances", int, 8, "Planner: most instances per role.", group=_G, min=1,
           env="DYN_PLANNER_MAX_INSTANCES"),
    Option("max_gpu_budget", int, None, "Planner: most GPUs over all roles (instances x --prefill-engine-num-gpu / "
           "--decode-engine-num-gpu); targets above it are scaled down proportionally. Unset = no budget.",
           group=_G, min=1, env="DYN_PLANNER_MAX_GPU_BUDGET"),
    Option("prefill_engine_num_gpu", int, 1, "Planner: GPUs of one prefill (or aggregated) instance; the profile's "
           "throughput is per GPU.", group=_G, min=1, env="DYN_PLANNER_PREFILL_ENGINE_NUM_GPU"),
    Option("decode_engine_num_gpu", int, 1, "Planner: GPUs of one decode instance.", group=_G, min=1,
           env="DYN_PLANNER_DECODE_ENGINE_NUM_GPU"),
    Option("profile_results_dir", str, None, "Planner: profile in Dynamo's layout (DIR/selected_prefill_interpolation/"
           "raw_data.npz and DIR/selected_decode_interpolation/raw_data.npz, as `dynamo-mono profile` writes); "
           "needed for throughput-based scaling.", group=_G, env="DYN_PLANNER_PROFILE_RESULTS_DIR"),
    Option("correction", bool, True, "Planner: correct the profile by observed / expected TTFT and ITL "
           "(--no-correction trusts the profile as is).", group=_G, env="DYN_PLANNER_CORRECTION"),
    Option("load_predictor", str, "constant", "Planner: predictor of the next interval's request count, ISL and "
           "OSL: constant (last value) or kalman (local linear trend). Dynamo's arima and prophet are not "
           "implemented.", group=_G, choices=PREDICTORS, env="DYN_PLANNER_LOAD_PREDICTOR"),
    Option("kalman_q_level", float, 1.0, "Kalman predictor: process noise of the level.", group=_G, min=0,
           env="DYN_PLANNER_KALMAN_Q_LEVEL"),
    Option("kalman_q_trend", float, 0.1, "Kalman predictor: process noise of the trend.", group=_G, min=0,
           env="DYN_PLANNER_KALMAN_Q_TREND"),
    Option("kalman_r", float, 10.0, "Kalman predictor: measurement noise.", group=_G, min=0, min_exclusive=True,
           env="DYN_PLANNER_KALMAN_R"),
    Option("kalman_min_points", int, 5, "Kalman predictor: observations before it predicts (until then: the last "
           "value).", group=_G, min=1, env="DYN_PLANNER_KALMAN_MIN_POINTS"),
    Option("enable_throughput_scaling", bool, True, "Planner: throughput-based scaling every "
           "--adjustment-interval (needs --profile-results-dir).", group=_G,
           env="DYN_PLANNER_ENABLE_THROUGHPUT_SCALING"),
    Option("enable_load_scaling", bool, False, "Planner: load-based scaling every --load-adjustment-interval "
           "(+1 when every instance is over the SLA, -1 when all are well under); with throughput scaling on, "
           "the throughput target is its floor.", group=_G, aliases=("--enable-loadbased-scaling",),
           env="DYN_PLANNER_ENABLE_LOAD_SCALING"),
    Option("load_adjustment_interval", float, 5.0, "Planner: seconds between load-based decisions.", group=_G,
           min=0, min_exclusive=True, aliases=("--loadbased-adjustment-interval",),
           env="DYN_PLANNER_LOAD_ADJUSTMENT_INTERVAL"),
    Option("load_learning_window", int, 50, "Planner: latest (load, latency) samples the load regressions fit.",
           group=_G, min=2, aliases=("--loadbased-learning-window",), env="DYN_PLANNER_LOAD_LEARNING_WINDOW"),
    Option("load_scaling_down_sensitivity", int, 80, "Planner: scale down when every instance's load is under "
           "this percentage of max_load x (n-1)/n (0 = never).", group=_G, min=0, max=100,
           aliases=("--loadbased-scaling-down-sensitivity",), env="DYN_PLANNER_LOAD_SCALING_DOWN_SENSITIVITY"),
    Option("load_metric_samples", int, 10, "Planner: samples of the instances' load averaged over one load "
           "interval.", group=_G, min=1, aliases=("--loadbased-metric-samples",),
           env="DYN_PLANNER_LOAD_METRIC_SAMPLES"),
    Option("load_min_observations", int, 5, "Planner: samples the load regressions need before they decide.",
           group=_G, min=2, aliases=("--loadbased-min-observations",), env="DYN_PLANNER_LOAD_MIN_OBSERVATIONS"),
    Option("planner_connector", str, "local", "Planner: who carries decisions out: local (start / stop engine "
           "instances in this process; scale-down drains), command (run --planner-command with the targets), "
           "dry-run (only log and export them; Dynamo: --no-operation).", group=_G, choices=CONNECTORS,
           env="DYN_PLANNER_CONNECTOR"),
    Option("planner_command", str, None, "Planner, command connector: program (and leading arguments, shell-split) "
           "run as `CMD MODEL ROLE=COUNT...` with DYN_PLANNER_MODEL, DYN_PLANNER_TARGET_<ROLE> and "
           "DYN_PLANNER_REASON set.", group=_G, env="DYN_PLANNER_COMMAND"),
    Option("planner_command_timeout", float, 300.0, "Planner, command connector: seconds the command may run "
           "before it is killed (a failed decision).", group=_G, min=0, min_exclusive=True,
           env="DYN_PLANNER_COMMAND_TIMEOUT"),
    Option("planner_drain_timeout", float, 120.0, "Planner, local connector: seconds a draining instance waits for "
           "its requests to finish before it is stopped (those left then migrate per --migration-limit).",
           group=_G, min=0, env="DYN_PLANNER_DRAIN_TIMEOUT"),
]
