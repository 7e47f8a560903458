"""`dynamo-mono bench`: a benchmark client for any OpenAI-compatible server (also usable as a library).

Names are imported on first use, so loading the `bench` CLI plugin at server start costs nothing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BenchConfig": "dynamo_mono.bench.config", "BenchConfigError": "dynamo_mono.bench.config",
    "Dist": "dynamo_mono.bench.config", "parse_dist": "dynamo_mono.bench.config",
    "arun_benchmark": "dynamo_mono.bench.runner", "arun_sweep": "dynamo_mono.bench.runner",
    "run_benchmark": "dynamo_mono.bench.runner", "run_sweep": "dynamo_mono.bench.runner",
    "BenchResult": "dynamo_mono.bench.stats", "Result": "dynamo_mono.bench.stats",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dynamo_mono.bench' has no attribute {name!r}")
    attr = "BenchResult" if name == "Result" else name
    return getattr(import_module(module), attr)
