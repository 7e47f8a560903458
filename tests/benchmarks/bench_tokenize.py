"""Prompt tokenization: HF `tokenizers` encode vs the cached byte-level BPE fast path, per 512-token chat prompt.

Prompts as the load generator builds them (random one-token words of the embedded tiny ChatML tokenizer, wrapped
in its chat template). Cold: the piece cache is emptied before every call and the prompt's words are all distinct,
so every piece is a miss; warm: the same prompt again. Also a mixed-script prompt, and the inline limit that
serving/model.py uses (fast path at FAST_INLINE_CHARS vs HF at OFFLOAD_CHARS).

Run: python3 tests/benchmarks/bench_tokenize.py [--tokenizer DIR]
"""

from __future__ import annotations

import argparse
import random
import time
import timeit
from typing import Callable

from dynamo_mono.bench.workload import WordPool
from dynamo_mono.preprocess import load_model_dir
from dynamo_mono.serving.model import FAST_INLINE_CHARS, OFFLOAD_CHARS


def _best_ms(fn: Callable[[], object], repeat: int = 7, number: int = 30) -> float:
    """Best mean milliseconds per call over `repeat` runs of `number` calls."""
    return min(timeit.repeat(fn, repeat=repeat, number=number)) / number * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default=None, help="model directory (default: the embedded tiny-chatml)")
    args = ap.parse_args()

    info = load_model_dir(args.tokenizer)
    tok = info.tokenizer
    enc = tok.fast_encoder
    if enc is None:
        raise SystemExit("this tokenizer has no fast path (unsupported shape): HF encodes everything")
    hf = tok.hf
    pool = WordPool(args.tokenizer)
    template = info.chat_template

    def chat(content: str) -> str:
        if template is None:
            return content
        return template.render([{"role": "user", "content": content}], add_generation_prompt=True)

    rng = random.Random(0)
    n_words = min(len(pool.words), 512 - pool.chat_overhead)
    distinct = chat(pool.text(rng.sample(range(len(pool.words)), n_words)))
    mixed_words = "the model server routes each request to the engine 東京 café 🚀 naïve Привет 123".split()
    mixed = chat(" ".join(rng.choice(mixed_words) for _ in range(400)))

    def hf_encode(text: str) -> Callable[[], object]:
        return lambda: hf.encode(text, add_special_tokens=False)

    def cold(text: str) -> Callable[[], object]:
        def run() -> None:
            enc.cache.clear()
            enc.encode(text)
        return run

    print(f"tokenizer: {args.tokenizer or 'tiny-chatml'} ({len(pool.words)} one-token words in the pool)")
    print(f"{'prompt':34s} {'tokens':>6s} {'HF ms':>8s} {'fast ms':>8s} {'HF/fast':>8s}")
    for label, text, fast in (
        ("512-token, distinct words, cold", distinct, cold(distinct)),
        ("512-token, distinct words, warm", distinct, lambda: enc.encode(distinct)),
        ("mixed script, cold", mixed, cold(mixed)),
        ("mixed script, warm", mixed, lambda: enc.encode(mixed)),
    ):
        ids = hf.encode(text, add_special_tokens=False).ids
        assert enc.encode(text) == ids, label
        t_hf, t_fast = _best_ms(hf_encode(text)), _best_ms(fast)
        print(f"{label:34s} {len(ids):6d} {t_hf:8.3f} {t_fast:8.3f} {t_hf / t_fast:7.2f}x")

    long_text = pool.text([rng.randrange(len(pool.words)) for _ in range(FAST_INLINE_CHARS // 4)])
    at_limit = long_text[:FAST_INLINE_CHARS]
    t_hf_inline = _best_ms(hf_encode(long_text[:OFFLOAD_CHARS]))
    t_cold_inline = _best_ms(cold(at_limit), number=10)
    t_warm_inline = _best_ms(lambda: enc.encode(at_limit), number=10)
    print(f"longest inline encode (event-loop stall): before, HF at {OFFLOAD_CHARS} chars {t_hf_inline:.3f} ms; "
          f"now, fast path at {FAST_INLINE_CHARS} chars {t_warm_inline:.3f} ms warm, {t_cold_inline:.3f} ms cold")


if __name__ == "__main__":
    main()
