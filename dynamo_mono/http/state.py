"""Server-wide state shared by the HTTP handlers (settings, models, metrics, plugins, drain flag)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dynamo_mono.config import Settings
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.model import ServedModel


@dataclass
class ServerState:
    """Everything a request handler needs; stored on the app under STATE."""

    settings: Settings
    metrics: FrontendMetrics
    plugins: Any
    models: dict[str, ServedModel] = field(default_factory=dict)
    admission: Any = None  # serving.admission.AdmissionQueue over all models
    draining: bool = False
    started_at: float = field(default_factory=time.monotonic)
    inflight: int = 0

    def model(self, name: str, flavor: str = "openai") -> ServedModel:
        m = self.models.get(name)
        if m is None:
            raise ApiError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return m

    def ready(self) -> bool:
        return bool(self.models) and all(m.pool.ready_instances() for m in self.models.values())


STATE: web.AppKey[ServerState] = web.AppKey("state", ServerState)
