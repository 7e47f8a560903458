"""Throughput-based scaling (Dynamo's SLA planner method): instances per role for the predicted next interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dynamo_mono.planner.config import AGG, DECODE, PREFILL, PlannerConfig
from dynamo_mono.planner.interpolation import DecodeProfile, PrefillProfile


@dataclass(frozen=True)
class Observation:
    """What the frontend saw over one interval (None: no request finished in it)."""

    duration_s: float
    num_req: float
    isl: float | None = None
    osl: float | None = None
    ttft_ms: float | None = None
    itl_ms: float | None = None
    request_duration_s: float | None = None


@dataclass(frozen=True)
class Prediction:
    num_req: float
    isl: float
    osl: float


@dataclass
class Decision:
    """Target instances per role and why."""

    targets: dict[str, int]
    reason: str
    details: dict[str, float] = field(default_factory=dict)


class ThroughputScaler:
    """prefill = ceil(num_req * isl / interval * min(1, ttft_correction) / prefill_thpt_per_gpu(isl) / gpus);
    decode = ceil(num_req * osl / interval / best_decode_thpt_per_gpu(itl / itl_correction, isl + osl / 2) / gpus);
    aggregated instances do both, so they get the sum of the two fractional needs, rounded up once. Each target is
    clamped to [min, max] instances, then scaled down proportionally to fit --max-gpu-budget."""

    def __init__(self, config: PlannerConfig, prefill: PrefillProfile, decode: DecodeProfile) -> None:
        self.config = config
        self.prefill = prefill
        self.decode = decode
        self.ttft_correction = 1.0
        self.itl_correction = 1.0

    def update_corrections(self, obs: Observation, decode_instances: int) -> None:
        """Observed / expected TTFT and ITL of the interval just ended (kept when it had no requests; 1 with
        --no-correction). Expected ITL is the profile's at the interval's mean concurrency per decode instance."""
        if not self.config.correction or obs.num_req <= 0 or obs.isl is None:
            return
        if obs.ttft_ms is not None:
            expected = self.prefill.ttft(obs.isl)
            if expected > 0:
                self.ttft_correction = obs.ttft_ms / expected
        if obs.itl_ms is not None and obs.osl is not None and obs.request_duration_s is not None:
            concurrency = obs.num_req * obs.request_duration_s / obs.duration_s / max(1, decode_instances)
            expected = self.decode.itl(concurrency, obs.isl + obs.osl / 2)
            if expected > 0:
                self.itl_correction = obs.itl_ms / expected

    def needs(self, pred: Prediction, interval_s: float) -> tuple[float, float, dict[str, float]]:
        """Fractional instances needed for prefill and for decode, and the numbers behind them."""
        cfg = self.config
        prefill_tps = pred.num_req * pred.isl / interval_s * min(1.0, self.ttft_correction)
        prefill_cap = self.prefill.thpt_per_gpu(pred.isl) * cfg.gpus(PREFILL if cfg.mode == "disagg" else AGG)
        itl_target = cfg.itl_ms / self.itl_correction if self.itl_correction > 0 else cfg.itl_ms
        point = self.decode.best(itl_target, pred.isl + pred.osl / 2)
        decode_tps = pred.num_req * pred.osl / interval_s
        decode_cap = point.thpt_per_gpu * cfg.gpus(DECODE if cfg.mode == "disagg" else AGG)
        p = prefill_tps / prefill_cap if prefill_cap > 0 else 0.0
        d = decode_tps / decode_cap if decode_cap > 0 else 0.0
        return p, d, {"prefill_tokens_per_s": prefill_tps, "prefill_capacity": prefill_cap,
                      "decode_tokens_per_s": decode_tps, "decode_capacity": decode_cap,
                      "itl_target_corrected_ms": itl_target, "ttft_correction": self.ttft_correction,
                      "itl_correction": self.itl_correction}

    def decide(self, pred: Prediction, interval_s: float) -> Decision:
        p, d, details = self.needs(pred, interval_s)
        cfg = self.config
        if cfg.mode == "disagg":
            raw = {PREFILL: math.ceil(p - 1e-9), DECODE: math.ceil(d - 1e-9)}
        else:
            raw = {AGG: math.ceil(p + d - 1e-9)}
        targets = self.clamp(raw)
        reason = (f"predicted {pred.num_req:.1f} req / {interval_s:g}s, ISL {pred.isl:.0f}, OSL {pred.osl:.0f}: "
                  f"prefill needs {p:.2f} instance(s) ({details['prefill_tokens_per_s']:.0f} tok/s at "
                  f"{details['prefill_capacity']:.0f} tok/s each, TTFT correction {self.ttft_correction:.2f}), decode "
                  f"{d:.2f} ({details['decode_tokens_per_s']:.0f} tok/s at {details['decode_capacity']:.0f} tok/s "
                  f"each for ITL {details['itl_target_corrected_ms']:.1f} ms)")
        if targets != raw:
            reason += f"; {raw} clamped to {targets}"
        return Decision(targets, reason, details)

    def clamp(self, raw: dict[str, int]) -> dict[str, int]:
        """Each role into [min, max] instances, then all roles into the GPU budget (proportionally, as Dynamo)."""
        cfg = self.config
        out = {r: max(cfg.min_instances, min(cfg.max_instances, n)) for r, n in raw.items()}
        return fit_budget(out, cfg)


def fit_budget(targets: dict[str, int], cfg: PlannerConfig) -> dict[str, int]:
    """Scale targets down proportionally until their GPUs fit --max-gpu-budget (never below --min-instances)."""
    budget = cfg.max_gpu_budget
    total = sum(n * cfg.gpus(r) for r, n in targets.items())
    if budget is None or total <= budget:
        return targets
    scale = budget / total
    out = {r: max(cfg.min_instances, math.floor(n * scale)) for r, n in targets.items()}
    # Hand GPUs left by rounding down to the roles in order (decode last, as it tends to be the larger pool).
    for r in sorted(out, key=lambda r: r == DECODE):
        while sum(n * cfg.gpus(k) for k, n in out.items()) + cfg.gpus(r) <= budget and out[r] < targets[r]:
            out[r] += 1
    return out
