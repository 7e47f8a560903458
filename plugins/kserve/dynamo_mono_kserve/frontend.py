"""The KServe frontend: a grpc.aio server on --grpc-port beside the HTTP server, sharing its state."""

from __future__ import annotations

import logging
import os
from typing import Any

import grpc

from dynamo_mono.api import ConfigError, ServerState
from dynamo_mono_kserve.proto import kserve_pb2_grpc as pb_grpc
from dynamo_mono_kserve.service import InferenceService

log = logging.getLogger("dynamo_mono.kserve")
STOP_GRACE_S = 0.1  # the server drained in-flight requests already; what is left is cut off


def server_options(settings: Any) -> list[tuple[str, Any]]:
    """grpc.aio server channel options from the settings (ConfigError for a window grpcio cannot set)."""
    if settings.grpc_initial_connection_window_size is not None:
        raise ConfigError("--grpc-initial-connection-window-size (DYN_GRPC_INITIAL_CONNECTION_WINDOW_SIZE) cannot "
                          "be applied: grpcio has no connection-window setting (it sizes that window itself); "
                          "set only --grpc-initial-stream-window-size")
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
    if settings.grpc_initial_stream_window_size is not None:
        # a fixed per-stream window: the read-ahead is honoured only with BDP auto-tuning off
        options += [("grpc.http2.lookahead_bytes", settings.grpc_initial_stream_window_size),
                    ("grpc.http2.bdp_probe", 0)]
    return options


def _credentials(settings: Any) -> Any:
    """TLS like the HTTP server (--tls-cert-path / --tls-key-path), else None (plaintext)."""
    if not settings.get("tls_cert_path"):
        return None
    with open(settings.tls_key_path, "rb") as k, open(settings.tls_cert_path, "rb") as c:
        return grpc.ssl_server_credentials([(k.read(), c.read())])


class KServeFrontend:
    """Frontend object for register_frontends: start() binds and serves, stop() shuts the server down."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.server: Any = None
        self.port: int | None = None

    async def start(self) -> None:
        s = self.state.settings
        server = grpc.aio.server(options=server_options(s))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(self.state), server)
        host = f"[{s.host}]" if ":" in s.host else s.host
        address = f"{host}:{s.grpc_port}"
        creds = _credentials(s)
        try:
            port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"--grpc-port {s.grpc_port}: cannot listen on {address}: {exc}") from None
        await server.start()
        self.server, self.port = server, port
        log.info("KServe gRPC frontend serving on %s:%s%s", s.host, port, " (TLS)" if creds else "")
        if s.grpc_ready_file:
            tmp = s.grpc_ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{s.host}:{port}\n")
            os.replace(tmp, s.grpc_ready_file)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(STOP_GRACE_S)
            self.server = None
