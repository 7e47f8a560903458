"""FAKE sglang.srt.server_args (0.5.23): ServerArgs with the fields the fake models, its CLI parser hooks."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional


@dataclasses.dataclass(slots=True)
class ServerArgs:
    """Same field names and defaults as sglang 0.5.23's arg_groups/fields/*.py for the subset modelled."""

    model_path: str = ""
    tokenizer_path: Optional[str] = None
    served_model_name: Optional[str] = None
    skip_tokenizer_init: bool = False
    incremental_streaming_output: bool = False
    tokenizer_worker_num: int = 1
    context_length: Optional[int] = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    random_seed: Optional[int] = None
    log_level: str = "info"
    # schedule
    mem_fraction_static: Optional[float] = None
    max_running_requests: Optional[int] = None
    max_total_tokens: Optional[int] = None
    chunked_prefill_size: Optional[int] = None
    schedule_policy: str = "fcfs"
    enable_priority_scheduling: bool = False
    abort_on_priority_when_disabled: bool = False
    schedule_low_priority_values_first: bool = False
    page_size: Optional[int] = None
    # memory
    disable_radix_cache: bool = False
    # parallel
    tp_size: int = 1
    dp_size: int = 1
    # observability
    kv_events_config: Optional[str] = None
    # lora / disaggregation (refused by the plugin; parsed so the refusal can name them)
    enable_lora: Optional[bool] = None
    lora_paths: Optional[list] = None
    disaggregation_mode: str = "null"

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        """Flags as SGLang spells them (--field-name); booleans are store_true, as in SGLang."""
        for f in dataclasses.fields(ServerArgs):
            flag = "--" + f.name.replace("_", "-")
            if f.type in ("bool", "Optional[bool]", bool):
                parser.add_argument(flag, action="store_true", default=f.default)
            elif f.name == "lora_paths":
                parser.add_argument(flag, nargs="*", default=None)
            else:
                kind = {"Optional[int]": int, "int": int, "Optional[float]": float}.get(str(f.type), str)
                parser.add_argument(flag, type=kind, default=f.default)

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "ServerArgs":
        names = [f.name for f in dataclasses.fields(cls) if hasattr(args, f.name)]
        return cls(**{n: getattr(args, n) for n in names})
