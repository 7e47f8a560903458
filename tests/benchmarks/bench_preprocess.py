"""Preprocess / postprocess costs: template + tokenize of a 512-token chat prompt, per-token detokenize and stop checks.

Run: python3 tests/benchmarks/bench_preprocess.py
"""

from __future__ import annotations

import random
import time
from typing import Callable

from dynamo_mono.preprocess import IncrementalDetokenizer, StopMatcher, load_model_dir


def _plain_sandbox():
    """The environment transformers builds, without our lookup fast paths (for comparison)."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from dynamo_mono.preprocess import chat_template as ct

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[ct._GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = ct._tojson
    env.globals["raise_exception"] = ct._raise_exception
    return env


def _best_of(fn: Callable[[], object], repeat: int = 5, number: int = 50) -> float:
    """Best mean seconds per call over `repeat` runs of `number` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _chat_of_about(tokens: int, info) -> list[dict]:
    rng = random.Random(0)
    words = "the model server routes each request to the best engine with a warm prefix cache 東京 café 🚀".split()
    msgs = [{"role": "system", "content": "You are a helpful assistant."}]
    while True:
        role = "user" if len(msgs) % 2 else "assistant"
        msgs.append({"role": role, "content": " ".join(rng.choice(words) for _ in range(30))})
        prompt = info.chat_template.render(msgs + [{"role": "user", "content": "?"}])
        if len(info.tokenizer.encode(prompt)) >= tokens:
            return msgs + [{"role": "user", "content": "?"}]


def main() -> None:
    t0 = time.perf_counter()
    info = load_model_dir(None)
    print(f"load embedded tiny-chatml:            {(time.perf_counter() - t0) * 1e3:8.2f} ms")
    tok, tmpl = info.tokenizer, info.chat_template
    assert tmpl is not None

    msgs = _chat_of_about(512, info)
    prompt = tmpl.render(msgs)
    n_prompt = len(tok.encode(prompt))
    t_render = _best_of(lambda: tmpl.render(msgs))
    t_encode = _best_of(lambda: tok.encode(prompt))
    print(f"chat prompt: {len(msgs)} messages, {n_prompt} tokens")
    print(f"  template render:                    {t_render * 1e6:8.1f} us")
    print(f"  tokenize:                           {t_encode * 1e6:8.1f} us")
    print(f"  template + tokenize:                {(t_render + t_encode) * 1e6:8.1f} us")
    plain = _plain_sandbox().from_string(tmpl.source)
    t_plain = _best_of(lambda: plain.render(messages=msgs, add_generation_prompt=True))
    print(f"  render with jinja's plain sandbox:  {t_plain * 1e6:8.1f} us  (ours is {t_plain / t_render:.2f}x faster)")

    gen_text = " ".join(m["content"] for m in msgs[1:])
    gen = tok.encode(gen_text)
    for use_stream, label in ((True, "DecodeStream"), (False, "offset window")):
        def run() -> None:
            d = IncrementalDetokenizer(tok, use_decode_stream=use_stream)
            for i in gen:
                d.add((i,))
            d.flush()
        per_token = _best_of(run, repeat=3, number=3) / len(gen)
        print(f"detokenize per token ({label:13s}):  {per_token * 1e6:8.2f} us   ({len(gen)} tokens)")

    pieces = []
    d = IncrementalDetokenizer(tok)
    for i in gen:
        pieces.append(d.add((i,)))
    for stops, label in ((["<|user|>"], "no first-char hit"), (["\n\nUser:", " the end", "###"], "frequent hits")):
        def feed_all() -> None:
            m = StopMatcher(stops)
            for p in pieces:
                m.feed(p)
            m.flush()
        per_piece = _best_of(feed_all, repeat=3, number=5) / len(pieces)
        print(f"stop strings per piece ({label:17s}): {per_piece * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
