"""Builds SGLang's ServerArgs from dynamo-mono options plus the pass-through SGLang flags; refuses what we cannot do."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dynamo_mono.api import ConfigError, EngineArgs

from dynamo_mono_sglang.options import SERVER_ARG_NAMES

# Flags dynamo-mono sets itself: a user value would break the token-in / token-out contract or the event wiring.
OWNED = {
    "skip_tokenizer_init": "dynamo-mono tokenizes; SGLang runs with skip_tokenizer_init",
    "incremental_streaming_output": "the plugin reads SGLang's incremental (delta) stream",
    "kv_events_config": "the plugin wires SGLang's KV event publisher to the router (--no-sglang-kv-events: off)",
    "context_length": "use --max-model-len",
    "served_model_name": "use --served-model-name",
    "tokenizer_worker_num": "dynamo-mono tokenizes",
}

# SGLang features this plugin does not carry yet: refused at startup, never accepted and ignored.
REFUSED = {
    "enable_lora": "LoRA adapters through the sglang plugin are not implemented yet (use --engine vllm or mocker)",
    "lora_paths": "LoRA adapters through the sglang plugin are not implemented yet",
    "disaggregation_mode": "SGLang's own prefill/decode disaggregation is not wired to dynamo-mono's",
}


def _parser() -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="dynamo-mono serve --engine sglang", add_help=False)
    ServerArgs.add_cli_args(parser)
    return parser


def build_server_args(args: EngineArgs, kv_endpoint: str | None) -> Any:
    """SGLang's ServerArgs: its parser over the pass-through args, then our options and owned fields on top."""
    from sglang.srt.server_args import ServerArgs

    options = args.options or {}
    extra = list(args.extra_args)
    parser = _parser()
    try:
        ns, unknown = parser.parse_known_args(["--model-path", args.model_path, *extra])
    except SystemExit:
        raise ConfigError(f"invalid SGLang engine arguments: {' '.join(extra)}") from None
    if unknown:
        raise ConfigError(f"unrecognized arguments (neither dynamo-mono nor SGLang flags): {' '.join(unknown)}")
    defaults = vars(parser.parse_args(["--model-path", args.model_path]))
    given = {k for k, v in vars(ns).items() if defaults.get(k) != v}
    for name, why in OWNED.items():
        if name in given:
            raise ConfigError(f"--{name.replace('_', '-')} is set by dynamo-mono: {why}")
    for name, why in REFUSED.items():
        value = getattr(ns, name, None)
        if name in given and value not in (None, False, "null", []):
            raise ConfigError(f"--{name.replace('_', '-')}: {why}")
    for name in SERVER_ARG_NAMES:
        value = options.get(name)
        if value is not None:
            setattr(ns, name, value)
    ns.skip_tokenizer_init = True
    ns.incremental_streaming_output = True
    ns.served_model_name = args.served_model_name
    if args.max_model_len:
        ns.context_length = args.max_model_len
    if kv_endpoint is not None:
        ns.kv_events_config = json.dumps({"publisher": "zmq", "endpoint": kv_endpoint, "topic": "kv"})
    return ServerArgs.from_cli_args(ns)
