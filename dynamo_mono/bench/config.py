"""Benchmark configuration: what to send, how fast, and how to report it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


class BenchConfigError(ValueError):
    """A benchmark option has a bad value; the message names the option."""


@dataclass(frozen=True, slots=True)
class Dist:
    """A length distribution: fixed:N, normal:MEAN:STD or uniform:LO:HI (integers, at least 1)."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            v = self.a
        elif self.kind == "normal":
            v = rng.gauss(self.a, self.b)
        else:
            v = rng.uniform(self.a, self.b)
        return max(1, int(round(v)))

    @property
    def fixed(self) -> bool:
        return self.kind == "fixed"

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        return f"{self.kind}:{self.a:g}:{self.b:g}"


def parse_dist(text: str, name: str = "length") -> Dist:
    """Parse `N`, `fixed:N`, `normal:MEAN:STD` or `uniform:LO:HI`; BenchConfigError naming `name` if bad."""
    parts = str(text).strip().split(":")
    try:
        if len(parts) == 1 or (parts[0] == "fixed" and len(parts) == 2):
            n = int(parts[-1])
            if n < 1:
                raise ValueError
            return Dist("fixed", n)
        if parts[0] in ("normal", "uniform") and len(parts) == 3:
            a, b = float(parts[1]), float(parts[2])
            if parts[0] == "normal" and (a < 1 or b < 0):
                raise ValueError
            if parts[0] == "uniform" and not (1 <= a <= b):
                raise ValueError
            return Dist(parts[0], a, b)
    except ValueError:
        pass
    raise BenchConfigError(f"{name}: {text!r} is not N, fixed:N, normal:MEAN:STD or uniform:LO:HI (values >= 1)")


@dataclass
class BenchConfig:
    """Everything one benchmark run needs; `run_benchmark(config)` runs it."""

    url: str
    model: str | None = None
    api_key: str | None = None
    api: str = "chat"  # chat | completions | completions-tokens
    stream: bool = True
    concurrency: int = 1
    request_rate: float | None = None  # requests/s, Poisson arrivals; None = closed loop
    num_requests: int | None = 100
    duration_s: float | None = None
    warmup: int = 0
    isl: Dist = field(default_factory=lambda: Dist("fixed", 512))
    osl: Dist = field(default_factory=lambda: Dist("fixed", 64))
    ignore_eos: bool | None = None  # None: on when OSL is fixed
    eos_field: str = "top"  # where ignore_eos goes: top-level (vLLM, SGLang, Dynamo 1.6.1, ours), nvext, or both
    workload: str = "random"  # random | shared-prefix | prefix-groups | trace:FILE
    prefix_len: int = 256  # shared-prefix / prefix-groups: tokens of the shared prefix
    num_groups: int = 8  # prefix-groups
    trace_time_scale: float = 1.0  # trace: multiply trace timestamps (0.5 = twice as fast)
    tokenizer: str | None = None  # model dir whose tokenizer.json builds prompts (None: embedded tiny ChatML)
    slo_ttft_ms: float | None = None
    slo_itl_ms: float | None = None
    server_pids: list[int] = field(default_factory=list)
    seed: int = 0
    timeout_s: float = 600.0
    progress: bool = False

    def validate(self) -> None:
        """Raise BenchConfigError for values no run could use."""
        if self.api not in ("chat", "completions", "completions-tokens"):
            raise BenchConfigError(f"--api: {self.api!r} is not chat, completions or completions-tokens")
        if self.eos_field not in ("top", "nvext", "both"):
            raise BenchConfigError(f"--eos-field: {self.eos_field!r} is not top, nvext or both")
        if self.concurrency < 1:
            raise BenchConfigError("--concurrency must be >= 1")
        if self.request_rate is not None and self.request_rate <= 0:
            raise BenchConfigError("--request-rate must be > 0")
        if self.num_requests is None and self.duration_s is None and not self.workload.startswith("trace:"):
            raise BenchConfigError("give --num-requests or --duration")
        if self.num_requests is not None and self.num_requests < 1:
            raise BenchConfigError("--num-requests must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise BenchConfigError("--duration must be > 0")
        if self.warmup < 0:
            raise BenchConfigError("--warmup must be >= 0")
        kind = self.workload.split(":", 1)[0]
        if kind not in ("random", "shared-prefix", "prefix-groups", "trace") or (kind == "trace" and ":" not in self.workload):
            raise BenchConfigError(f"--workload: {self.workload!r} is not random, shared-prefix, prefix-groups or trace:FILE")
        if self.prefix_len < 0 or self.num_groups < 1:
            raise BenchConfigError("--prefix-len must be >= 0 and --num-groups >= 1")

    @property
    def use_ignore_eos(self) -> bool:
        return self.osl.fixed if self.ignore_eos is None else self.ignore_eos
