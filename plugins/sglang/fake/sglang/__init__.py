"""FAKE sglang 0.5.23 for dynamo-mono's tests: the Python API surface `dynamo_mono_sglang` uses, nothing more.

Reproduced from the sglang 0.5.23 wheel (PyPI, `sglang-0.5.23-cp311-cp311-manylinux_2_34_x86_64.whl`):
- sglang/__init__.py: `Engine` and `ServerArgs` exported at the top level;
- srt/entrypoints/engine.py: `Engine(**kwargs)` / `Engine(server_args=...)`, `async_generate(...)` (same
  parameters, same defaults; `data_parallel_rank` deprecated for `routed_dp_rank`), `shutdown()`,
  `tokenizer_manager`;
- srt/server_args.py: `ServerArgs` (a subset of its fields, same names and defaults, except that the fake needs
  only what it models), `ServerArgs.add_cli_args(parser)`, `ServerArgs.from_cli_args(ns)`;
- srt/managers/tokenizer_manager.py + tokenizer_control_mixin.py: `abort_request(rid="", abort_all=False)`,
  `async get_loads(include=None, dp_rank=None) -> list[LoadSnapshot]`, `context_len`, and the incremental stream
  chunks of `_handle_batch_output` for BatchTokenIDOutput ({"output_ids": new ids, "meta_info": {"id",
  "finish_reason", "prompt_tokens", "weight_version", "completion_tokens", "cached_tokens",
  "output_token_logprobs", "output_top_logprobs"}});
- srt/managers/schedule_batch.py: finish reasons FINISH_MATCHED_TOKEN / FINISH_LENGTH / FINISH_ABORT as
  `to_json()` dicts; the matched stop token stays in output_ids; `ignore_eos` also disables stop_token_ids;
- srt/sampling/sampling_params.py: the sampling_params keys (unknown keys raise TypeError, as msgspec does);
- srt/managers/load_snapshot.py: `LoadSnapshot` fields;
- srt/disaggregation/kv_events.py: `KVEventsConfig`, `BlockStored` / `BlockRemoved` / `AllBlocksCleared` (tagged
  maps), `KVEventBatch` ([ts, events, attn_dp_rank]), `ZmqEventPublisher` (multipart (topic, seq u64 BE,
  payload), port offset by the dp rank, connect unless the host is a wildcard).

Strict: unknown keyword arguments raise TypeError, undefined attributes raise AttributeError (slots), and
parameters the fake does not model (image_data, lora_path, ...) raise NotImplementedError when set, so a plugin
call outside this surface fails a test instead of passing silently.

Test hook (fake only): env SGLANG_FAKE_FAULT_PROMPT="7,7,7" makes a request whose input_ids start with those ids
fail in the scheduler after one token (finish_reason abort, status_code 500), as a crashed forward pass would.
SGLANG_FAKE_SPEEDUP divides the mocker's simulated step times (default 1).
"""

from sglang.srt.entrypoints.engine import Engine
from sglang.srt.server_args import ServerArgs
from sglang.version import __version__

__all__ = ["Engine", "ServerArgs", "__version__"]
