"""Options of remote workers: the server's worker listener, the `worker` command, and disaggregation."""

from __future__ import annotations

from dynamo_mono.config import Option

MiB = 1024 * 1024
_S = "workers"
_D = "disaggregation"

# Accepted by `serve` (the server side) and, where they apply, by `worker`.
WORKER_TOKEN = Option("worker_token", str, None,
                      "Shared secret remote workers present to join (required to accept workers).", group=_S)
MAX_FRAME_SIZE = Option("max_frame_size", int, 16 * MiB,
                        "Largest accepted worker-protocol frame in bytes; a bigger one closes the connection.",
                        group=_S, min=1024)

SERVER_WORKER_OPTIONS: list[Option] = [
    WORKER_TOKEN,
    Option("worker_host", str, None, "Address the worker listener binds to (default: --host).", group=_S),
    Option("worker_port", int, 0, "TCP port workers connect to (0 = any free port; workers find it through "
           "GET /workers/endpoint on the HTTP port).", group=_S, min=0, max=65535),
    MAX_FRAME_SIZE,
    Option("heartbeat_interval", float, 0.5, "Seconds between heartbeats on worker connections.", group=_S,
           min=0.01),
    Option("heartbeat_misses", int, 3, "Missed heartbeats after which a worker is declared dead.", group=_S, min=1),
    Option("router_conditional_disagg", bool, False,
           "Prefill short prompts (or prompts mostly cached on the decode instance) locally instead of on a "
           "prefill instance.", group=_D),
    Option("disagg_min_prefill_tokens", int, 256,
           "With --router-conditional-disagg: uncached prompt tokens below which prefill stays local.",
           group=_D, min=0),
    Option("disagg_prefill_timeout", float, 30.0,
           "Seconds a prefill instance may take to hand a prompt's KV over; past it the decode instance prefills "
           "the prompt itself (counted in dynamo_frontend_disagg_local_prefill_fallbacks_total). 0 = no limit.",
           group=_D, min=0),
]

# Only for `dynamo-mono worker` (the model/engine options are shared with `serve`).
WORKER_COMMAND_OPTIONS: list[Option] = [
    Option("connect", str, None, "Server to join: http://HOST:PORT (its HTTP address) or tcp://HOST:WORKER_PORT.",
           group=_S),
    WORKER_TOKEN,
    MAX_FRAME_SIZE,
    Option("worker_name", str, None, "Name shown in the server log (default: hostname:pid).", group=_S),
    Option("connect_backoff_max", float, 5.0, "Cap in seconds of the exponential backoff between connection "
           "attempts.", group=_S, min=0.01),
    Option("log_level", str, "info", "Log level.", group=_S, choices=("debug", "info", "warning", "error")),
]
