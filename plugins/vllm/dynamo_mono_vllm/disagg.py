"""Disaggregated prefill / decode over vLLM's NixlConnector: config, side channel and the typed transfer mapping.

A prefill instance runs a prompt with kv_transfer_params {"do_remote_decode": true} (max_tokens 1): vLLM keeps the
prompt's blocks for kv_lease_duration seconds and returns where they are (engine id, block ids, side-channel
host / port). The server carries them typed (KvTransferParams) to a decode instance, which submits the same prompt
with {"do_remote_prefill": true, ...}: its NixlConnector handshakes with the prefill instance over the side channel,
reads the blocks with NIXL (UCX, host memory on CPU builds) and computes from the prompt's last position on. A read
that fails is recomputed locally (kv_load_failure_policy "recompute") and counted.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

from dynamo_mono.api import ConfigError, KvEndpoint, KvTransferParams

TRANSPORT = "vllm-nixl"  # KvEndpoint.transport of a vLLM prefill instance's transfers
CONNECTOR_MODULE = "dynamo_mono_vllm.nixl_connector"


def kv_transfer_config(options: dict[str, Any], extra: list[str], kind: str) -> Any:
    """vLLM's KVTransferConfig for --disaggregation-mode prefill|decode (NixlConnector, both roles), or None for agg."""
    mode = options.get("disaggregation_mode") or "agg"
    if mode == "agg":
        return None
    if kind != "chat":
        raise ConfigError(f"--disaggregation-mode {mode}: only chat models split prefill and decode, not {kind} "
                          "models")
    if any(a == "--kv-transfer-config" or a.startswith("--kv-transfer-config=") for a in extra):
        raise ConfigError("--disaggregation-mode sets vLLM's --kv-transfer-config (NixlConnector); give one or the "
                          "other")
    from vllm.config import KVTransferConfig
    from vllm.platforms import current_platform

    from dynamo_mono_vllm.nixl_connector import import_nixl

    if not import_nixl():
        raise ConfigError(f"--disaggregation-mode {mode} moves KV with vLLM's NixlConnector, but NIXL does not import "
                          "here: pip install nixl-cu12==1.5.1 && pip install --no-deps nixl==1.5.1")
    # CPU builds keep the KV cache in host memory: NIXL registers it as DRAM and UCX moves it.
    device = "cpu" if current_platform.device_type == "cpu" else "cuda"
    return KVTransferConfig(kv_connector="NixlConnector", kv_connector_module_path=CONNECTOR_MODULE,
                            kv_role="kv_both", kv_buffer_device=device, kv_load_failure_policy="recompute",
                            kv_connector_extra_config={"kv_lease_duration": int(options.get("kv_lease_duration")
                                                                                 or 30)})


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def side_channel_env(host: str, port: int) -> Iterator[None]:
    """vLLM reads its NIXL side channel from the environment in the EngineCore process it spawns: set it for the
    spawn, then restore (instances of one process each get their own port)."""
    keys = {"VLLM_NIXL_SIDE_CHANNEL_HOST": host, "VLLM_NIXL_SIDE_CHANNEL_PORT": str(port)}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def transfer_from_vllm(params: dict[str, Any] | None) -> KvTransferParams | None:
    """Our typed KvTransferParams from the kv_transfer_params vLLM returns on a prefill request's final output."""
    if not params or not params.get("do_remote_prefill") or not params.get("remote_engine_id"):
        return None
    groups = tuple(tuple(int(b) for b in g) for g in params.get("remote_block_ids") or ())
    return KvTransferParams(
        endpoint=KvEndpoint(TRANSPORT, str(params["remote_host"]), int(params["remote_port"]),
                            agent=str(params["remote_engine_id"])),
        key=str(params["remote_request_id"]), num_blocks=len(groups[0]) if groups else 0,
        engine_id=str(params["remote_engine_id"]), block_ids=groups,
        num_tokens=int(params.get("remote_num_tokens") or 0),
        cached_tokens=int(params.get("remote_prefill_cached_tokens") or 0),
        tp_size=int(params.get("tp_size") or 1), pp_size=int(params.get("pp_size") or 1),
        dcp_size=int(params.get("dcp_size") or 1), first_token_on_decode=True)


def transfer_to_vllm(t: KvTransferParams) -> dict[str, Any]:
    """The kv_transfer_params a decode request hands vLLM to pull the prompt's blocks named by t."""
    return {"do_remote_prefill": True, "do_remote_decode": False,
            "remote_block_ids": [list(g) for g in t.block_ids], "remote_engine_id": t.engine_id,
            "remote_request_id": t.key, "remote_host": t.endpoint.host, "remote_port": t.endpoint.port,
            "tp_size": t.tp_size, "pp_size": t.pp_size, "dcp_size": t.dcp_size,
            "remote_num_tokens": t.num_tokens, "remote_prefill_cached_tokens": t.cached_tokens,
            "transfer_mode": "pull"}


PREFILL_PARAMS = {"do_remote_decode": True}


def connector_counts(payload: Any) -> tuple[int, int]:
    """(bytes moved, failed reads) in one scheduler step's kv_connector_stats (NixlKVConnectorStats data)."""
    data = getattr(payload, "data", payload)
    if not isinstance(data, dict):
        return 0, 0
    moved = int(sum(data.get("bytes_transferred") or ()))
    failed = len(data.get("num_failed_transfers") or ()) + len(data.get("num_failed_handshakes") or ())
    return moved, failed
