#!/usr/bin/env bash
# Real TensorRT-LLM run of the trtllm plugin, for a machine with an NVIDIA GPU (not runnable on the CPU CI
# machines: TensorRT-LLM needs CUDA). Installs the pinned tensorrt-llm from NVIDIA's index, picks a small model,
# then:
#   1. fidelity_check.py on the real engine: the facts the fake assumes (compare with the fake's, printed too);
#   2. the engine conformance kit against the real engine, when conformance/test_engine_kit.py exists
#      (target trtllm-real: serve args "--engine trtllm --model $MODEL", capabilities as for trtllm-fake);
#   3. a short benchmark through the server (dynamo-mono bench, 60 requests, concurrency 8).
# Results land in $OUT (default ./trtllm-smoke-out): facts-real.json, facts-fake.json, kit.log, bench.json,
# server.log. Environment: TRTLLM_VERSION (default 1.3.0rc27), MODEL (a local HF model dir or a hub id the
# machine can reach; default Qwen/Qwen2.5-0.5B-Instruct), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
TRTLLM_VERSION="${TRTLLM_VERSION:-1.3.0rc27}"
MODEL="${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
OUT="${OUT:-$PWD/trtllm-smoke-out}"
mkdir -p "$OUT"

nvidia-smi -L || { echo "gpu-smoke.sh: no NVIDIA GPU here" >&2; exit 2; }
"$PY" -m pip install -q --extra-index-url https://pypi.nvidia.com "tensorrt-llm==${TRTLLM_VERSION}"
"$PY" -m pip install -q -e '.[test,bench]' -e plugins/trtllm
"$PY" -c "import tensorrt_llm; print('tensorrt_llm', tensorrt_llm.__version__)" | tee "$OUT/version.txt"

# A hub id becomes a local directory (the fidelity check reads config.json).
if [ ! -d "$MODEL" ]; then
    MODEL="$("$PY" -c "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))" "$MODEL")"
fi
echo "model: $MODEL" | tee -a "$OUT/version.txt"

# 1. the fake's assumptions, checked on the real engine, and the fake's answers beside them
"$PY" plugins/trtllm/fidelity_check.py "$MODEL" | tee "$OUT/facts-real.json"
PYTHONPATH=plugins/trtllm/fake:. TRTLLM_FAKE_SPEEDUP_RATIO=0 "$PY" plugins/trtllm/fidelity_check.py "$MODEL" \
    > "$OUT/facts-fake.json"
"$PY" - "$OUT/facts-real.json" "$OUT/facts-fake.json" <<'PYEOF' | tee "$OUT/facts-diff.txt"
import json, sys
real, fake = (json.load(open(p)) for p in sys.argv[1:3])
skip = {"stats_count", "eos_finish"}  # counts and lengths differ by nature
diff = {k: (real.get(k), fake.get(k)) for k in sorted(set(real) | set(fake)) if k not in skip and real.get(k) != fake.get(k)}
print("facts that differ (real, fake):", json.dumps(diff, indent=1) if diff else "none")
print("eos finish real:", real.get("eos_finish"), "fake:", fake.get("eos_finish"))
PYEOF

# 2. the conformance kit (added to the repository by the engine-kit work; skipped when absent)
if [ -f conformance/test_engine_kit.py ]; then
    DYN_KIT_TRTLLM_MODEL="$MODEL" "$PY" -m pytest -q conformance/test_engine_kit.py -k trtllm 2>&1 | tee "$OUT/kit.log" || true
else
    echo "conformance/test_engine_kit.py not present: kit skipped" | tee "$OUT/kit.log"
fi

# 3. a short benchmark through the server
READY="$OUT/ready"
rm -f "$READY"
"$PY" -m dynamo_mono.cli serve --engine trtllm --model "$MODEL" --router-mode kv --port 0 --ready-file "$READY" \
    --free-gpu-memory-fraction 0.5 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s "$READY" ] && break; kill -0 $SERVER || { cat "$OUT/server.log"; exit 1; }; sleep 1; done
URL="$(cat "$READY")"
"$PY" -m dynamo_mono.cli bench --url "$URL" --num-requests 60 --concurrency 8 --isl 512 --osl 128 --ignore-eos \
    --json "$OUT/bench.json" --no-progress | tee "$OUT/bench.txt"
curl -s "$URL/metrics" | grep -E '^dynamo_(engine|component_router_kv)' > "$OUT/metrics.txt" || true
echo "gpu-smoke.sh: done; results in $OUT"
