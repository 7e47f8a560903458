"""The KServe frontend's server options (Dynamo's names and env vars where Dynamo has them)."""

from __future__ import annotations

from dynamo_mono.api import Option

GROUP = "kserve grpc frontend"

KSERVE_OPTIONS = [
    Option("kserve_grpc_server", bool, False, "serve the KServe v2 gRPC protocol (GRPCInferenceService) beside HTTP",
           group=GROUP),
    Option("grpc_port", int, 8787, "port of the KServe gRPC server (0 = an ephemeral port; see --grpc-ready-file)",
           group=GROUP, min=0, max=65535),
    Option("grpc_ready_file", str, None, "once the gRPC server listens, write HOST:PORT to this file", group=GROUP,
           metavar="PATH"),
    Option("grpc_initial_connection_window_size", int, None,
           "HTTP/2 initial connection flow-control window (bytes); grpcio sizes it itself, so setting it is refused",
           group=GROUP, min=65535, max=2**31 - 1, env="DYN_GRPC_INITIAL_CONNECTION_WINDOW_SIZE"),
    Option("grpc_initial_stream_window_size", int, None,
           "HTTP/2 initial per-stream flow-control window (bytes; unset = grpcio's auto-tuned window)", group=GROUP,
           min=65535, max=2**31 - 1, env="DYN_GRPC_INITIAL_STREAM_WINDOW_SIZE"),
]
