"""Server-wide state shared by the HTTP handlers (settings, models, metrics, plugins, drain flag)."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from aiohttp import web

from dynamo_mono.config import Settings
from dynamo_mono.metrics import FrontendMetrics
from dynamo_mono.serving.errors import InvalidRequest, ModelNotFound
from dynamo_mono.serving.model import ServedModel


@dataclass
class ServerState:
    """Everything a request handler needs; stored on the app under STATE."""

    settings: Settings
    metrics: FrontendMetrics
    plugins: Any
    models: dict[str, ServedModel] = field(default_factory=dict)
    admission: Any = None  # serving.admission.AdmissionQueue over all models
    media_fetcher: Any = None  # media.fetch.MediaFetcher: the guarded fetcher of client-named URLs
    media_input: Any = None  # serving.media_input.MediaInput: fetch + decode + cache of chat requests' media
    loras: Any = None  # lora.manager.LoraManager: the LoRA adapters served as models beside their base models
    # frontend_procs: `await metrics_merge(registry)` renders /metrics with the HTTP processes' samples added in
    metrics_merge: Any = None
    draining: bool = False
    started_at: float = field(default_factory=time.monotonic)
    inflight: int = 0
    _worker_ids: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def model(self, name: str, kind: str = "chat") -> ServedModel:
        """The served model `name` of `kind` (ModelNotFound / InvalidRequest otherwise)."""
        m = self.models.get(name)
        if m is None or (not m.configured and not m.pool.instances):
            raise ModelNotFound(f"The model '{name}' does not exist", param="model")
        if m.kind != kind:
            raise InvalidRequest(f"model '{name}' is a{'n' if m.kind[0] in 'aeiou' else ''} {m.kind} model; "
                                 f"this route serves {kind} models", param="model")
        return m

    def add_model(self, model: ServedModel) -> None:
        self.models[model.name] = model

    def remove_model(self, name: str) -> ServedModel | None:
        return self.models.pop(name, None)

    def new_worker_id(self) -> int:
        """A process-wide unique instance id (local engines and remote workers' instances alike)."""
        return next(self._worker_ids)

    def ready(self) -> bool:
        """Every configured model has a ready instance (models that only workers bring, and LoRA adapters, do not
        count)."""
        configured = [m for m in self.models.values() if m.configured and m.parent is None]
        return bool(configured) and all(m.pool.ready_instances() for m in configured)


STATE: web.AppKey[ServerState] = web.AppKey("state", ServerState)
