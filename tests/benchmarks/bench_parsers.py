"""Parser cost per streamed token on tag-free text (1-4 character chunks): goal <= 2 µs per token."""

from __future__ import annotations

import random
import time

from dynamo_mono.parsers.plugin import REASONING, TOOL_CALL
from dynamo_mono.parsers.stream import OutputParser

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


def chunks(n: int, seed: int = 0) -> list[str]:
    rnd = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog while streaming tokens to you".split()
    text = " ".join(rnd.choice(words) for _ in range(n))
    out, i = [], 0
    while i < len(text) and len(out) < n:
        k = rnd.randint(1, 4)
        out.append(text[i : i + k])
        i += k
    return out


def per_token_us(make, pieces: list[str], repeat: int = 15) -> float:
    best = float("inf")
    for _ in range(repeat):
        p = make()
        t0 = time.perf_counter()
        for piece in pieces:
            p.feed(piece)
        p.finish()
        best = min(best, time.perf_counter() - t0)
    return best / len(pieces) * 1e6


def main() -> None:
    pieces = chunks(20_000)
    print(f"{len(pieces)} chunks of 1-4 chars, tag-free text; best of 15 runs; goal <= 2.00 us/token")
    rows = [("baseline: loop calling a no-op", lambda: _Noop())]
    rows.append(("OutputParser(basic, hermes)", lambda: OutputParser(REASONING["basic"](), TOOL_CALL["hermes"](TOOLS))))
    for name in sorted(REASONING):
        rows.append((f"OutputParser({name}, None)", lambda n=name: OutputParser(REASONING[n](), None)))
    for name in sorted(TOOL_CALL):
        rows.append((f"OutputParser(None, {name})", lambda n=name: OutputParser(None, TOOL_CALL[n](TOOLS))))
    rows.append(("OutputParser(qwen3, hermes) after </think>", lambda: _after_think()))
    for label, make in rows:
        us = per_token_us(make, pieces)
        print(f"{label:48s} {us:6.3f} us/token  {'ok' if us <= 2.0 else 'OVER GOAL'}")


class _Noop:
    def feed(self, text: str) -> None:
        return None

    def finish(self) -> None:
        return None


def _after_think() -> OutputParser:
    p = OutputParser(REASONING["qwen3"](), TOOL_CALL["hermes"](TOOLS))
    p.feed("<think>thinking</think>")
    return p


if __name__ == "__main__":
    main()
