"""Per-choice postprocessing: engine token deltas → text, stop strings, reasoning / tool-call deltas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from dynamo_mono.engine import EngineOutput, StopConditions
from dynamo_mono.preprocess.detokenizer import IncrementalDetokenizer
from dynamo_mono.preprocess.stop_strings import StopMatcher


@dataclass(slots=True)
class Step:
    """What one engine step adds to one choice, ready for the API layer to serialize."""

    index: int
    content: str = ""
    reasoning: str = ""
    tool_calls: Sequence[Any] = ()  # parsers.base.ToolCallDelta
    logprobs: list[tuple[str, float, list[tuple[str, float]], int]] | None = None  # (token, lp, top, id)
    finish_reason: str | None = None
    num_tokens: int = 0


class ChoiceState:
    """Turns one choice's EngineOutputs into Steps; holds its counters for usage and metrics."""

    __slots__ = ("index", "tokenizer", "detok", "stops", "parser", "want_logprobs", "completion_tokens",
                 "cached_tokens", "finish_reason", "stop_reason", "saw_tool_call", "done", "_tok_cache",
                 "include_stop", "min_tokens", "_reason_ids")

    def __init__(self, index: int, tokenizer: Any, *, stops: list[str], skip_special_tokens: bool = True,
                 parser: Any = None, want_logprobs: bool = False, include_stop: bool = False,
                 prompt_tail: list[int] | tuple[int, ...] = (),
                 stop_conditions: StopConditions | None = None) -> None:
        """stop_conditions: the request's (vLLM semantics) - no stop string may end in the text of the first
        min_tokens tokens; a stop on one of stop_token_ids is reported as stop_reason, an EOS stop is not."""
        self.index = index
        self.tokenizer = tokenizer
        # the prompt's last tokens let SentencePiece-style decoders keep the first token's leading space
        self.detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens,
                                            prompt_tail=prompt_tail)
        self.stops = StopMatcher(stops) if stops else None
        self.include_stop = include_stop
        self.parser = parser
        self.want_logprobs = want_logprobs
        self.min_tokens = 0
        self._reason_ids: frozenset[int] = frozenset()
        if stop_conditions is not None:
            self.min_tokens = stop_conditions.min_tokens
            eos = () if stop_conditions.ignore_eos else stop_conditions.eos_token_ids
            self._reason_ids = frozenset(stop_conditions.stop_token_ids).difference(eos)
        self.completion_tokens = 0
        self.cached_tokens = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None  # the stop string or stop token that ended it
        self.saw_tool_call = False
        self.done = False
        self._tok_cache: dict[int, str] = {}

    def on_output(self, out: EngineOutput) -> Step:
        """Consume one engine output. A Step with finish_reason set is the choice's last."""
        if out.cached_tokens is not None:
            self.cached_tokens = out.cached_tokens
        ids = out.token_ids
        n = len(ids)
        finish = out.finish_reason
        if self.stops is None:
            self.completion_tokens += n
            text = self.detok.add(ids) if n else ""
            if finish is None and not (self.want_logprobs and out.logprobs):
                # the per-token case: text to route, nothing ends here
                step = Step(self.index, num_tokens=n)
                if self.parser is None or self.parser.inert:
                    step.content = text
                else:
                    self._route_text(step, text, False)
                return step
            if finish is not None:
                text += self.detok.flush()
            used = n
        else:
            text, used = self._scan_stops(ids, finish is not None)
            if self.stop_reason is not None:
                finish = "stop"
        step = Step(self.index, num_tokens=used)
        if finish == "stop" and self.stop_reason is None and out.stop_token_id in self._reason_ids:
            self.stop_reason = out.stop_token_id
        if self.want_logprobs and out.logprobs:
            lps = out.logprobs if used == n else out.logprobs[:used]
            step.logprobs = [(self._token_str(lp.token_id), lp.logprob,
                              [(self._token_str(t), l) for t, l in lp.top], lp.token_id) for lp in lps]
        self._route_text(step, text, finish is not None)
        if finish is not None:
            if finish == "stop" and self.saw_tool_call:
                finish = "tool_calls"
            self.finish_reason = step.finish_reason = finish
            self.done = True
        return step

    def _scan_stops(self, ids: list[int], final: bool) -> tuple[str, int]:
        """Detokenize ids a token at a time through the stop matcher, up to the token that completes a stop
        (sets stop_reason): tokens after it give no text, usage or logprobs, however the engine batched them.
        Returns (text to emit, tokens used)."""
        n = len(ids)
        detok = self.detok
        if n == 1 and not final:  # one token per output
            self.completion_tokens += 1
            return self._feed_stops(detok.add(ids)), 1
        text = ""
        for k in range(n):
            self.completion_tokens += 1
            text += self._feed_stops(detok.add(ids if n == 1 else ids[k:k + 1]))
            if self.stop_reason is not None:
                return text, k + 1
        if final:
            tail = detok.flush()
            if tail:
                text += self._feed_stops(tail)
            if self.stop_reason is None:
                text += self.stops.flush()
        return text, n

    def _feed_stops(self, piece: str) -> str:
        stops = self.stops
        if self.completion_tokens <= self.min_tokens:  # vLLM: no stop string ends within min_tokens
            return stops.skip(piece)
        if not piece:
            return ""
        text, matched = stops.feed(piece)
        if matched is not None:
            self.stop_reason = matched
            if self.include_stop:
                text += matched
        return text

    def _route_text(self, step: Step, text: str, final: bool) -> None:
        parser = self.parser
        if parser is None:
            step.content = text
            return
        d = parser.feed(text) if text else None
        if final:
            tail = parser.finish()
            if d is None:
                d = tail
            else:
                d.reasoning += tail.reasoning
                d.content += tail.content
                d.tool_calls.extend(tail.tool_calls)
        if d is not None:
            step.content, step.reasoning, step.tool_calls = d.content, d.reasoning, d.tool_calls
            if d.tool_calls:
                self.saw_tool_call = True

    def _token_str(self, token_id: int) -> str:
        s = self._tok_cache.get(token_id)
        if s is None:
            s = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._tok_cache[token_id] = s
        return s
