"""Startup-to-/ready time and idle RSS of `dynamo-mono serve` (goals: <= 1.0 s, <= 120 MB).

Run: python tests/benchmarks/bench_startup.py [--runs 5] [-- extra serve args]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from conformance.server import start_server  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children, in MB (from /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    times, rss = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        srv = start_server(["--speedup-ratio", "0", *args.extra])
        times.append(time.perf_counter() - t0)
        time.sleep(0.5)
        rss.append(rss_mb(srv.proc.pid))
        srv.stop()
    print(f"startup to /ready: median {statistics.median(times):.3f} s  (min {min(times):.3f}, max {max(times):.3f})"
          f"  goal <= 1.0 s")
    print(f"idle RSS:          median {statistics.median(rss):.1f} MB  goal <= 120 MB")


if __name__ == "__main__":
    main()
