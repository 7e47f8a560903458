"""Builds vLLM's AsyncEngineArgs from dynamo-mono options plus the pass-through vLLM flags."""

from __future__ import annotations

from typing import Any

from dynamo_mono.api import ConfigError, EngineArgs

from dynamo_mono_vllm.disagg import kv_transfer_config
from dynamo_mono_vllm.lora import lora_flags
from dynamo_mono_vllm.options import ENGINE_ARG_NAMES


def chosen_options(options: dict[str, Any]) -> dict[str, Any]:
    """The engine options that go to AsyncEngineArgs: those set (by the user or as this plugin's default)."""
    return {name: options[name] for name in ENGINE_ARG_NAMES if options.get(name) is not None}


def build_engine_args(args: EngineArgs) -> Any:
    """AsyncEngineArgs: vLLM's parser over the pass-through args, then our options on top."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    options = args.options or {}
    extra = list(args.extra_args)
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="dynamo-mono serve --engine vllm"))
    try:
        ns, unknown = parser.parse_known_args(["--model", args.model_path, *extra])
    except SystemExit:
        raise ConfigError(f"invalid vLLM engine arguments: {' '.join(extra)}") from None
    if unknown:
        raise ConfigError(f"unrecognized arguments (neither dynamo-mono nor vLLM flags): {' '.join(unknown)}")
    eargs = AsyncEngineArgs.from_cli_args(ns)
    _set_runner(eargs, args.kind)
    eargs.model = args.model_path
    if "--tokenizer" not in extra:
        eargs.tokenizer = args.model_path
    eargs.served_model_name = [args.served_model_name]
    if args.max_model_len:
        eargs.max_model_len = args.max_model_len
    for name, value in chosen_options(options).items():
        setattr(eargs, name, value)
    lora = lora_flags(extra)
    if lora and not eargs.enable_lora:
        raise ConfigError(f"{', '.join(lora)} configure LoRA adapters, which are off: add --enable-lora")
    if eargs.enable_lora and args.kind != "chat":
        raise ConfigError(f"--enable-lora: LoRA adapters serve chat models here, not {args.kind} models")
    kvt = kv_transfer_config(options, extra, args.kind)
    if kvt is not None:
        eargs.kv_transfer_config = kvt
    gb = options.get("multimodal_embedding_cache_capacity_gb")
    if gb:
        eargs.ec_transfer_config = embedding_cache_config(float(gb), extra)
    # Our own stat logger feeds load_metrics(); vLLM's periodic log lines are off unless asked for.
    if "--disable-log-stats" not in extra and "--no-disable-log-stats" not in extra:
        eargs.disable_log_stats = True
    return eargs


def embedding_cache_config(gb: float, extra: list[str]) -> Any:
    """--multimodal-embedding-cache-capacity-gb: vLLM's ECCPUConnector in both roles (an instance offloads its
    encoder outputs to a CPU region of `gb` GiB and loads them back for later items of the same uuid). The
    connector runs on vLLM's V2 model runner only, which needs Triton: refused where vLLM cannot run it."""
    from vllm.config import ECTransferConfig
    import vllm.envs as envs
    from vllm.triton_utils import HAS_TRITON

    if any(a == "--ec-transfer-config" or a.startswith("--ec-transfer-config=") for a in extra):
        raise ConfigError("--multimodal-embedding-cache-capacity-gb sets vLLM's --ec-transfer-config (ECCPUConnector); "
                          "give one or the other")
    if not HAS_TRITON or envs.VLLM_USE_V2_MODEL_RUNNER is False:
        raise ConfigError("--multimodal-embedding-cache-capacity-gb needs vLLM's ECCPUConnector, which runs on "
                          "vLLM's V2 model runner only (Triton, GPU builds; not VLLM_USE_V2_MODEL_RUNNER=0): this "
                          "vLLM cannot keep encoder outputs across requests. Drop the flag (vLLM still caches "
                          "processed media inputs, --mm-processor-cache-gb)")
    return ECTransferConfig(ec_connector="ECCPUConnector", ec_role="ec_both",
                            ec_connector_extra_config={"ec_cpu_bytes": int(gb * (1 << 30))})


def _set_runner(eargs: Any, kind: str) -> None:
    """Embedding models run on vLLM's pooling runner (embed task); chat models never do."""
    runner = getattr(eargs, "runner", "auto")
    if kind == "embedding":
        if runner not in ("auto", "pooling"):
            raise ConfigError(f"--runner {runner} cannot serve an embedding model; embedding models run on "
                              f"vLLM's pooling runner (drop --runner or pass --runner pooling)")
        eargs.runner = "pooling"
    elif runner == "pooling":
        raise ConfigError("--runner pooling serves embedding models: start it with --model-kind embedding "
                          "(or kind: embedding in --config)")
