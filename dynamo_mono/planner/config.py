"""The planner's settings as one typed object, checked once at startup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamo_mono.config import ConfigError

AGG, PREFILL, DECODE = "agg", "prefill", "decode"


@dataclass(frozen=True)
class PlannerConfig:
    mode: str = "agg"  # agg | disagg
    ttft_ms: float = 500.0
    itl_ms: float = 50.0
    adjustment_interval: float = 180.0
    min_instances: int = 1
    max_instances: int = 8
    max_gpu_budget: int | None = None
    prefill_gpus: int = 1
    decode_gpus: int = 1
    profile_results_dir: str | None = None
    correction: bool = True
    load_predictor: str = "constant"
    kalman_q_level: float = 1.0
    kalman_q_trend: float = 0.1
    kalman_r: float = 10.0
    kalman_min_points: int = 5
    enable_throughput_scaling: bool = True
    enable_load_scaling: bool = False
    load_adjustment_interval: float = 5.0
    load_learning_window: int = 50
    load_scaling_down_sensitivity: int = 80
    load_metric_samples: int = 10
    load_min_observations: int = 5
    connector: str = "local"
    command: str | None = None
    command_timeout: float = 300.0
    drain_timeout: float = 120.0

    @property
    def roles(self) -> tuple[str, ...]:
        return (PREFILL, DECODE) if self.mode == "disagg" else (AGG,)

    def gpus(self, role: str) -> int:
        return self.decode_gpus if role == DECODE else self.prefill_gpus

    @classmethod
    def from_settings(cls, s: Any) -> "PlannerConfig":
        cfg = cls(mode=s.planner_mode, ttft_ms=s.ttft, itl_ms=s.itl, adjustment_interval=s.adjustment_interval,
                  min_instances=s.min_instances, max_instances=s.max_instances, max_gpu_budget=s.max_gpu_budget,
                  prefill_gpus=s.prefill_engine_num_gpu, decode_gpus=s.decode_engine_num_gpu,
                  profile_results_dir=s.profile_results_dir, correction=s.correction,
                  load_predictor=s.load_predictor, kalman_q_level=s.kalman_q_level,
                  kalman_q_trend=s.kalman_q_trend, kalman_r=s.kalman_r, kalman_min_points=s.kalman_min_points,
                  enable_throughput_scaling=s.enable_throughput_scaling, enable_load_scaling=s.enable_load_scaling,
                  load_adjustment_interval=s.load_adjustment_interval, load_learning_window=s.load_learning_window,
                  load_scaling_down_sensitivity=s.load_scaling_down_sensitivity,
                  load_metric_samples=s.load_metric_samples, load_min_observations=s.load_min_observations,
                  connector=s.planner_connector, command=s.planner_command,
                  command_timeout=s.planner_command_timeout, drain_timeout=s.planner_drain_timeout)
        cfg.check()
        return cfg

    def check(self) -> None:
        """ConfigError on combinations no single option can reject."""
        if self.max_instances < self.min_instances:
            raise ConfigError(f"--max-instances {self.max_instances} is below --min-instances {self.min_instances}")
        if not self.enable_throughput_scaling and not self.enable_load_scaling:
            raise ConfigError("--planner needs --enable-throughput-scaling or --enable-load-scaling")
        if self.enable_throughput_scaling and not self.profile_results_dir:
            raise ConfigError("throughput-based scaling needs --profile-results-dir (or --no-enable-throughput-scaling "
                              "with --enable-load-scaling)")
        if self.enable_load_scaling and self.enable_throughput_scaling and \
                self.load_adjustment_interval >= self.adjustment_interval:
            raise ConfigError(f"--load-adjustment-interval {self.load_adjustment_interval:g} must be shorter than "
                              f"--adjustment-interval {self.adjustment_interval:g}")
        if self.connector == "command" and not self.command:
            raise ConfigError("--planner-connector command needs --planner-command")
        if self.connector != "command" and self.command:
            raise ConfigError("--planner-command is used only with --planner-connector command")
        if self.max_gpu_budget is not None:
            floor = sum(self.min_instances * self.gpus(r) for r in self.roles)
            if self.max_gpu_budget < floor:
                raise ConfigError(f"--max-gpu-budget {self.max_gpu_budget} is below the GPUs of --min-instances "
                                  f"per role ({floor})")
