"""Media input through the vLLM plugin on whatever vLLM build is installed (GPU where one is lent; CPU too).

Builds the tiny random Qwen2-VL (dynamo_mono_vllm.tiny_vlm), starts one VllmEngine and checks, printing one JSON
line per check and exiting non-zero on a failure:
  - an image prompt with server-expanded placeholders generates, prompt_tokens = the server's count;
  - placeholder counts for several sizes and a video equal vLLM's expansion (the plugin verifies each);
  - a repeated image is a prefix-cache hit, another image changes the answer;
  - with --embedding-cache-gb G (default 1 where vLLM has Triton, else skipped): a second engine with vLLM's
    ECCPUConnector (--multimodal-embedding-cache-capacity-gb) gives the same greedy answers as the first, also
    for the same images behind another text prefix (no prefix-cache hit: the encoder outputs come back from the
    connector's CPU region).

Usage (repository root): PYTHONPATH=.:plugins/vllm python plugins/vllm/gpu_vlm_check.py [--model-dir DIR]
    [--embedding-cache-gb G] [--dtype float32]
On CPU set the env of tests/vllm/conftest.py (VLLM_CPU_KVCACHE_SPACE=1, VLLM_ENABLE_V1_MULTIPROCESSING=0, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dynamo_mono.api import EngineArgs, EngineRequest, MediaItem, SamplingParams, StopConditions
from dynamo_mono_vllm.engine import VllmEngine
from dynamo_mono_vllm.placeholders import image_tokens, video_tokens
from dynamo_mono_vllm.tiny_vlm import build_tiny_qwen2_vl

FAILED: list[str] = []


def report(name: str, ok: bool, **facts: Any) -> None:
    print(json.dumps({"check": name, "ok": ok, **facts}), flush=True)
    if not ok:
        FAILED.append(name)


def pixels(h: int, w: int, seed: int, frames: int = 0) -> np.ndarray:
    shape = (frames, h, w, 3) if frames else (h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def request(tok: Any, spec: dict, kind: str, data: np.ndarray, count: int, text: str = "describe",
            prefix: str = "") -> EngineRequest:
    ids = tok.encode(f"<|im_start|>user\n{prefix}<|vision_start|>", add_special_tokens=False).ids
    start = len(ids)
    ids += [spec[kind]["token_id"]] * count
    ids += tok.encode(f"<|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False).ids
    uuid = hashlib.sha256(data.tobytes()).hexdigest()
    item = MediaItem(kind, data, uuid, int(uuid[:16], 16), start, count)
    return EngineRequest(f"r{time.monotonic_ns()}", ids, SamplingParams(temperature=0.0),
                         StopConditions(max_tokens=8, ignore_eos=True), media=[item])


async def run(engine: VllmEngine, req: EngineRequest) -> tuple[list[int], int, int]:
    toks: list[int] = []
    prompt = cached = -1
    async for out in engine.generate(req):
        if out.finish_reason == "error":
            raise RuntimeError(out.error)
        toks += out.token_ids
        if out.prompt_tokens is not None:
            prompt, cached = out.prompt_tokens, out.cached_tokens
    return toks, prompt, cached


async def start(model: Path, dtype: str, options: dict[str, Any]) -> VllmEngine:
    opts = {"dtype": dtype, "block_size": 32, "num_gpu_blocks_override": 256, **options}
    if dtype == "float32":
        opts["enforce_eager"] = True
    engine = VllmEngine(EngineArgs(str(model), "vlm", 0, 2048, [2], 0, opts,
                                   extra_args=["--limit-mm-per-prompt", '{"image": 2, "video": 1}']))
    await engine.start()
    return engine


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "dynamo-mono-vllm-tiny-qwen2-vl-v2")
    ap.add_argument("--embedding-cache-gb", type=float, default=None)
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    from tokenizers import Tokenizer
    from vllm.platforms import current_platform
    from vllm.triton_utils import HAS_TRITON

    model = build_tiny_qwen2_vl(a.model_dir)
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    report("platform", True, device=current_platform.device_name, triton=HAS_TRITON)
    t0 = time.monotonic()
    engine = await start(model, a.dtype, {})
    spec = engine.media_input
    report("card", engine.model_card().modalities == ["text", "image", "video"], start_s=round(time.monotonic() - t0, 1),
           modalities=engine.model_card().modalities)
    answers: dict[str, list[int]] = {}
    try:
        for h, w in [(100, 150), (28, 28), (10, 500), (719, 1280), (224, 224)]:
            n = image_tokens(spec["image"], w, h)
            toks, prompt, _ = await run(engine, request(tok, spec, "image", pixels(h, w, h + w), n))
            answers[f"{h}x{w}"] = toks
            report(f"image {h}x{w}", len(toks) == 8, placeholders=n, prompt_tokens=prompt)
        vid = pixels(56, 84, 3, frames=5)
        n = video_tokens(spec["video"], 5, 84, 56)
        toks, prompt, _ = await run(engine, request(tok, spec, "video", vid, n))
        report("video 5x56x84", len(toks) == 8, placeholders=n, prompt_tokens=prompt)
        again, _, cached = await run(engine, request(tok, spec, "image", pixels(100, 150, 250), 20))
        report("same image: prefix hit, same answer", again == answers["100x150"] and cached > 0, cached=cached)
        other, _, _ = await run(engine, request(tok, spec, "image", pixels(100, 150, 7), 20))
        report("other image: other answer", other != answers["100x150"])
        for prefix in ("first prefix", "second prefix"):
            for h, w in [(100, 150), (224, 224)]:
                req = request(tok, spec, "image", pixels(h, w, h + w), image_tokens(spec["image"], w, h),
                              prefix=prefix)
                answers[f"{prefix} {h}x{w}"] = (await run(engine, req))[0]
    finally:
        await engine.stop()

    gb = a.embedding_cache_gb if a.embedding_cache_gb is not None else (1.0 if HAS_TRITON else 0.0)
    if gb <= 0:
        report("embedding cache", True, skipped="vLLM has no Triton here: its ECCPUConnector cannot run")
    else:
        engine = await start(model, a.dtype, {"multimodal_embedding_cache_capacity_gb": gb})
        try:
            diffs = []
            for prefix in ("first prefix", "second prefix"):  # the second reuses the offloaded encoder outputs
                for h, w in [(100, 150), (224, 224)]:
                    req = request(tok, spec, "image", pixels(h, w, h + w), image_tokens(spec["image"], w, h),
                                  prefix=prefix)
                    if (await run(engine, req))[0] != answers[f"{prefix} {h}x{w}"]:
                        diffs.append(f"{prefix} {h}x{w}")
            report("embedding cache (ECCPUConnector)", not diffs, gb=gb, differing=diffs)
        finally:
            await engine.stop()
    print(json.dumps({"failed": FAILED}))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
