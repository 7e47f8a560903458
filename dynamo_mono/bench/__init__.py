"""`dynamo-mono bench`: a load generator for any OpenAI-compatible server, usable as a library."""

from dynamo_mono.bench.config import BenchConfig, BenchConfigError, Dist, parse_dist
from dynamo_mono.bench.runner import arun_benchmark, arun_sweep, run_benchmark, run_sweep
from dynamo_mono.bench.stats import BenchResult

Result = BenchResult

__all__ = ["BenchConfig", "BenchConfigError", "BenchResult", "Dist", "Result", "arun_benchmark", "arun_sweep",
           "parse_dist", "run_benchmark", "run_sweep"]
