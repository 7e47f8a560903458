"""Server options of LoRA adapters: static adapters, management key, placement and the load estimator."""

from __future__ import annotations

from dynamo_mono.config import Option

_G = "lora"

LORA_OPTIONS: list[Option] = [
    Option("lora_modules", str, None, "Adapters loaded at startup, vLLM's `name=path` pairs separated by spaces or "
           "commas (path: a local directory or file:// URI with adapter_config.json + adapter_model.safetensors); "
           "each is served as model `name` beside its base model.", group=_G, metavar="NAME=PATH ..."),
    Option("lora_admin_key", str, None, "If set, the adapter management routes (/v1/loras, /v1/load_lora_adapter, "
           "/v1/unload_lora_adapter) require this key (`Authorization: Bearer KEY` or `x-api-key`) instead of "
           "--api-key.", group=_G),
    Option("lora_replica_factor", int, 0, "Instances (worker_id, dp_rank) an adapter is loaded on and routed to, "
           "chosen by rendezvous hashing (Dynamo's HRW scoring); 0 = every instance of the base model.", group=_G,
           min=0),
    Option("lora_max_replica_factor", int, 0, "Most instances the load estimator grows a hot adapter's replica "
           "set to (0 = every instance); only with --lora-replica-factor > 0.", group=_G, min=0),
    Option("lora_scale_up_active", float, 0.0, "Load estimator: grow an adapter's replica set by one when its "
           "mean active requests per replica, over the sampled window, exceed this (0 = replica sets keep "
           "--lora-replica-factor).", group=_G, min=0.0),
    Option("lora_scale_down_active", float, 0.5, "Load estimator: shrink a grown replica set by one (never below "
           "--lora-replica-factor) when the mean active requests per replica of the window stay below this; must "
           "be below --lora-scale-up-active (the gap is the hysteresis).", group=_G, min=0.0),
    Option("lora_sample_interval", float, 1.0, "Seconds between the load estimator's samples of active requests "
           "per adapter, and between placement checks (instances that joined or left).", group=_G, min=0.01),
    Option("lora_sample_window", int, 10, "Samples the load estimator averages over.", group=_G, min=1),
]
