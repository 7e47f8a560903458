#!/usr/bin/env bash
# Installs everything the full test suite runs against: the core with its test extras, and the
# optional plugins with their real dependencies, so the marked suites (vllm, nixl) run instead of
# skipping: NIXL (CPU memory, UCX) and the CPU build of vLLM (~2.5 GB, a few minutes the first time;
# idempotent and quick afterwards). torch stays pinned to the local CPU wheel (2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -m pip install -q -e '.[test]'
"$PY" -m pip install -q 'nixl-cu12==1.5.1'
"$PY" -m pip install -q --no-deps 'nixl==1.5.1' -e plugins/nixl
PYTHON="$PY" bash plugins/vllm/install-cpu.sh
