#!/usr/bin/env bash
# Real SGLang on a CUDA GPU machine: install the pinned SGLang, pick or make a small model, run the engine kit
# against it and a short benchmark. Not runnable on CPU machines (SGLang has no CPU wheel).
#
#   MODEL=/path/to/hf-model bash plugins/sglang/gpu-smoke.sh     # a local model directory (no download)
#   bash plugins/sglang/gpu-smoke.sh                              # builds a tiny random Qwen2 (head dim 64)
#
# Env: SGLANG_VERSION (0.5.23, the version the plugin and its fake follow), DP (dp ranks, default 1; 2 needs two
# GPUs), PYTHON, OUT (where logs and bench JSON go, default ./out/sglang-smoke).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
OUT="${OUT:-out/sglang-smoke}"
mkdir -p "$OUT"
"$PY" -m pip install -q "sglang==${SGLANG_VERSION:-0.5.23}"
"$PY" -m pip install -q -e '.[test,bench]' -e plugins/sglang
"$PY" -c "import sglang; print('sglang', sglang.__version__)"
if [ -z "${MODEL:-}" ]; then
  MODEL="$OUT/tiny-qwen2"
  "$PY" - "$MODEL" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from dynamo_mono.api import TINY_CHATML_DIR
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
vocab = json.loads((Path(TINY_CHATML_DIR) / "config.json").read_text())["vocab_size"]
torch.manual_seed(0)
cfg = Qwen2Config(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=0,
                  eos_token_id=2, tie_word_embeddings=True, torch_dtype="bfloat16")
Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    shutil.copy(Path(TINY_CHATML_DIR) / f, out / f)
print("tiny model at", out)
PYEOF
fi
VOCAB=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1] + '/config.json'))['vocab_size'])" "$MODEL")
export DYN_KIT_SGLANG_MODEL="$MODEL" DYN_KIT_SGLANG_DP="${DP:-1}" DYN_KIT_VOCAB="$VOCAB"
# 1. the engine conformance kit against the real engine
"$PY" -m dynamo_mono.testing --target conformance.test_engine_kit:SGLANG_GPU_TARGET -- -q -rs 2>&1 | tee "$OUT/kit.log"
# 2. a short benchmark: one server, closed loop at c=1 and c=16
"$PY" -m dynamo_mono.cli serve --engine sglang --model "$MODEL" --served-model-name kit --page-size 16 \
  --dp-size "${DP:-1}" --router-mode kv --port 18123 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf http://127.0.0.1:18123/ready >/dev/null && break; sleep 1; done
"$PY" -m dynamo_mono.cli bench --url http://127.0.0.1:18123 --tokenizer "$MODEL" --isl 512 --osl 128 \
  --ignore-eos --sweep 1,16 --num-requests 64 --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
