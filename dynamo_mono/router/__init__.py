"""KV-aware router: chooses the engine instance (worker_id, dp_rank) for each request."""

from dynamo_mono.router.options import ROUTER_OPTIONS
from dynamo_mono.router.router import NoInstance, Router, Selection

__all__ = ["ROUTER_OPTIONS", "NoInstance", "Router", "Selection"]
