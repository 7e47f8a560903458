"""dynamo-mono plugin: the KServe v2 gRPC frontend (`--kserve-grpc-server`), registered through register_frontends."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import RegisterFrontend, hookimpl
from dynamo_mono_kserve.options import KSERVE_OPTIONS


def _factory(state: Any) -> Any:
    from dynamo_mono_kserve.frontend import KServeFrontend  # grpcio is imported only when the frontend is on

    return KServeFrontend(state)


@hookimpl
def register_frontends(register: RegisterFrontend) -> None:
    register("kserve", _factory, enable_option="kserve_grpc_server", options=KSERVE_OPTIONS,
             requires=["grpc", "google.protobuf"], install_hint="pip install dynamo-mono-kserve",
             description="KServe v2 gRPC (GRPCInferenceService) beside the HTTP server")
