"""Makes PyPI's (CUDA) torchvision importable next to a CPU torch: guards its fake-kernel registrations.

torchvision registers fake (meta) kernels for its C++ ops at import; when those ops did not load (a CUDA build's
_C next to the CPU torch) `torch.library.register_fake("torchvision::nms")` raises "operator torchvision::nms does
not exist" and the whole import fails, although the Python transforms that vision-language processors use need
none of those ops. This rewrites the decorator in torchvision/_meta_registrations.py to register only when the ops
loaded, as the module's own `register_meta` helper already does. Idempotent; a no-op when torchvision imports.

Usage: python patch_torchvision.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

GUARD = '''def _register_fake(name):
    """register_fake only when torchvision's C++ ops loaded (patched by dynamo-mono's vLLM CPU install)."""
    return torch.library.register_fake(name) if torchvision.extension._has_ops() else (lambda fn: fn)


'''
ANCHOR = "@functools.lru_cache(None)\ndef get_meta_lib"


def imports() -> bool:
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed: nothing to patch")
        return 0
    if imports():
        print("torchvision imports: nothing to patch")
        return 0
    path = Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if "def _register_fake(" not in text:
        if ANCHOR not in text:
            print(f"{path}: unknown layout, not patched", file=sys.stderr)
            return 1
        text = text.replace("@torch.library.register_fake(", "@_register_fake(")
        text = text.replace(ANCHOR, GUARD + ANCHOR, 1)
        path.write_text(text)
    if not imports():
        err = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True).stderr
        print(f"torchvision still fails to import after patching {path}:\n{err[-2000:]}", file=sys.stderr)
        return 1
    print(f"patched {path}: torchvision imports (without its C++ ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
