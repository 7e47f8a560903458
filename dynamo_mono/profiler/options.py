"""Options of `dynamo-mono profile` (Dynamo's profiler names where it has them: --output-dir, --max-context-length,
--prefill-interpolation-granularity, --decode-interpolation-granularity)."""

from __future__ import annotations

from dynamo_mono.config import ConfigError, Option

_G = "profile"

PROFILE_OPTIONS: list[Option] = [
    Option("output_dir", str, "profiling_results",
           "write DIR/selected_prefill_interpolation/raw_data.npz, DIR/selected_decode_interpolation/raw_data.npz, "
           "DIR/profile.json (sweep and engine facts) and DIR/profile.png", _G, metavar="DIR"),
    Option("prefill_isl", str, None,
           "prompt lengths of the prefill sweep, comma-separated (default: --prefill-interpolation-granularity "
           "lengths spaced geometrically from 64 to --max-context-length)", _G, metavar="LIST"),
    Option("decode_context_length", str, None,
           "average context lengths (ISL + OSL/2) of the decode sweep, comma-separated (default: "
           "--decode-interpolation-granularity lengths from 128 to half of --max-context-length)", _G,
           metavar="LIST"),
    Option("decode_concurrency", str, None,
           "concurrent requests of the decode sweep, comma-separated (default: per context length, "
           "--decode-interpolation-granularity counts from 1 up to what --max-num-seqs and the KV cache hold); a "
           "count whose KV does not fit is an error when given here", _G, metavar="LIST"),
    Option("max_context_length", int, None,
           "longest prompt / context profiled (default: the smaller of the model's context length and the "
           "instance's KV cache)", _G, min=2),
    Option("prefill_interpolation_granularity", int, 6, "prompt lengths in the default prefill sweep", _G,
           min=1, max=256),
    Option("decode_interpolation_granularity", int, 4,
           "context lengths, and concurrencies per context length, in the default decode sweep", _G, min=1,
           max=64),
    Option("prefill_batch", int, 4,
           "also time this many prompts submitted at once, at each prefill length whose batch fits one step: the "
           "per-prompt overhead of batched prefill (prefill_seq_overhead_ms, which the mocker replays); 0 = skip",
           _G, min=0),
    Option("decode_osl", int, 64,
           "tokens each decode request generates; ITL is measured while every request of a point is decoding", _G,
           min=3),
    Option("profile_repeats", int, 5, "measurements per point: prompts per prefill length, waves per decode point "
           "(the median is kept)", _G, min=1),
    Option("profile_warmup", int, 2, "warm-up requests before measuring (first-run compilation, caches)", _G,
           min=0),
    Option("profile_seed", int, 0, "seed of the random prompt tokens", _G, min=0),
    Option("plot", bool, True, "also write DIR/profile.png (needs matplotlib)", _G),
    Option("progress", bool, True, "show a progress bar on stderr (tqdm)", _G),
]


def parse_int_list(raw: str | None, flag: str) -> list[int] | None:
    """'128,256' -> [128, 256] (sorted, unique); None stays None; ConfigError on anything but positive ints."""
    if raw is None:
        return None
    try:
        values = sorted({int(x) for x in raw.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"invalid {flag}={raw!r}: expected comma-separated integers") from None
    if not values or values[0] < 1:
        raise ConfigError(f"invalid {flag}={raw!r}: expected positive integers")
    return values
