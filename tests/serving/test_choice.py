"""ChoiceState: stop strings x output parsers x logprobs on real token streams of the embedded tiny tokenizer.

The central property: however the engine batches the same token stream into outputs (one token each, several,
empty keep-alives, the finish alone or with the last tokens), the choice's final text is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_mono.engine import EngineOutput, StopConditions, TokenLogprob
from dynamo_mono.parsers.base import ParsedDelta
from dynamo_mono.parsers.stream import merge
from dynamo_mono.preprocess import load_model_dir
from dynamo_mono.serving.choice import ChoiceState, Step
from tests.parsers.helpers import make, strip_ids

TOK = load_model_dir(None).tokenizer
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IM_END = TOK.token_to_id("<|im_end|>")
WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'


@dataclass
class Run:
    steps: list[Step]
    state: ChoiceState

    @property
    def content(self) -> str:
        return "".join(s.content for s in self.steps)

    @property
    def reasoning(self) -> str:
        return "".join(s.reasoning for s in self.steps)

    def parsed(self) -> tuple[str, str, list[tuple[str, str]]]:
        """(reasoning, content, [(name, arguments)]) merged as a client merges the stream."""
        return strip_ids(merge([ParsedDelta(s.reasoning, s.content, list(s.tool_calls)) for s in self.steps]))

    @property
    def logprobs(self) -> list[tuple[str, float, list[tuple[str, float]], int]]:
        return [lp for s in self.steps if s.logprobs for lp in s.logprobs]


def lp_of(token_id: int, pos: int) -> TokenLogprob:
    """A recognisable logprob per position, with two alternatives."""
    return TokenLogprob(token_id, -0.01 * (pos + 1), [(token_id, -0.01 * (pos + 1)), (IM_END, -9.0)])


def run(state: ChoiceState, groups: list[list[int]], finish: str = "length", *, finish_alone: bool = False,
        stop_token_id: int | None = None, logprobs: bool = False) -> Run:
    """Feed the groups as engine outputs (the engine's finish on the last, or alone after it) until the choice
    is done; check the one-finish-step-last rule."""
    steps: list[Step] = []
    pos = 0
    for k, g in enumerate(groups):
        last = k == len(groups) - 1 and not finish_alone
        o = EngineOutput(list(g), finish_reason=finish if last else None,
                         stop_token_id=stop_token_id if last else None)
        if logprobs and g:
            o.logprobs = [lp_of(t, pos + j) for j, t in enumerate(g)]
        pos += len(g)
        steps.append(state.on_output(o))
        if state.done:
            break
    if not state.done:
        steps.append(state.on_output(EngineOutput([], finish_reason=finish, stop_token_id=stop_token_id)))
    assert state.done
    assert [s.finish_reason is not None for s in steps] == [False] * (len(steps) - 1) + [True]
    assert steps[-1].finish_reason == state.finish_reason
    assert all(s.index == state.index for s in steps)
    return Run(steps, state)


def one_each(text: str) -> list[list[int]]:
    return [[t] for t in TOK.encode(text)]


def choice(stops: list[str] = (), **kw) -> ChoiceState:
    return ChoiceState(0, TOK, stops=list(stops), **kw)


# --- strategies --------------------------------------------------------------------------------------
_PIECES = ["a", "b", "ab", "ba", " ", "\n", "STOP", "S", "TO", "é", "漢字", "😀", " café", "Hello", " world",
           "<|im_end|>", "<think>", "</think>"]
texts = st.lists(st.sampled_from(_PIECES), max_size=25).map("".join)
stop_lists = st.lists(st.text(alphabet="ab \nSTOP字😀", min_size=1, max_size=4), min_size=1, max_size=3)


@st.composite
def splits(draw, ids: list[int]) -> list[list[int]]:
    """ids cut into consecutive groups, some empty (keep-alive outputs)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(ids)), max_size=8)))
    points = [0, *cuts, len(ids)]
    return [ids[a:b] for a, b in zip(points, points[1:])]


def earliest_stop(text: str, stops: list[str]) -> tuple[int, str | None]:
    """(start, stop) of the stop that ends first in text, the first listed on a tie (vLLM); (len, None)."""
    hits = [(text.find(s) + len(s), k, s) for k, s in enumerate(stops) if s in text]
    if not hits:
        return len(text), None
    end, _, stop = min(hits)
    return end - len(stop), stop


# --- properties ----------------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), text=texts, skip=st.booleans(), finish_alone=st.booleans(),
       finish=st.sampled_from(["length", "stop"]))
def test_any_batching_of_the_tokens_gives_the_full_decode(data, text: str, skip: bool, finish_alone: bool,
                                                           finish: str) -> None:
    ids = TOK.encode(text)
    groups = data.draw(splits(ids))
    r = run(choice(skip_special_tokens=skip), groups, finish, finish_alone=finish_alone)
    assert r.content == TOK.decode(ids, skip_special_tokens=skip)
    assert r.state.finish_reason == finish and r.state.stop_reason is None
    assert r.state.completion_tokens == len(ids)
    assert sum(s.num_tokens for s in r.steps) == len(ids)


@SETTINGS
@given(data=st.data(), text=texts, stops=stop_lists, skip=st.booleans(), finish_alone=st.booleans())
def test_text_ends_right_before_the_earliest_stop_string_however_batched(data, text: str, stops: list[str],
                                                                       skip: bool, finish_alone: bool) -> None:
    ids = TOK.encode(text)
    full = TOK.decode(ids, skip_special_tokens=skip)
    cut, _ = earliest_stop(full, stops)
    r = run(choice(stops, skip_special_tokens=skip), data.draw(splits(ids)), "length", finish_alone=finish_alone)
    assert r.content == full[:cut]
    if cut < len(full):
        assert r.state.finish_reason == "stop"
        assert r.state.stop_reason in stops and full[cut:].startswith(r.state.stop_reason)
    else:
        assert r.state.finish_reason == "length" and r.state.stop_reason is None


@SETTINGS
@given(data=st.data(), text=texts, stop=st.text(alphabet="ab \nSTOP字😀", min_size=1, max_size=4))
def test_include_stop_str_in_output_appends_the_matched_stop(data, text: str, stop: str) -> None:
    ids = TOK.encode(text)
    full = TOK.decode(ids)
    cut, matched = earliest_stop(full, [stop])
    r = run(choice([stop], include_stop=True), data.draw(splits(ids)))
    assert r.content == full[:cut] + (matched or "")


@SETTINGS
@given(text=texts, stops=st.one_of(st.just([]), stop_lists))
def test_logprobs_stay_aligned_with_the_tokens_one_token_per_output(text: str, stops: list[str]) -> None:
    ids = TOK.encode(text)
    r = run(choice(stops, want_logprobs=True), [[t] for t in ids], logprobs=True)
    used = ids[: r.state.completion_tokens]
    assert [lp[3] for lp in r.logprobs] == used
    assert [lp[0] for lp in r.logprobs] == [TOK.decode([t], skip_special_tokens=False) for t in used]
    assert [lp[1] for lp in r.logprobs] == [-0.01 * (i + 1) for i in range(len(used))]
    assert all(lp[2] == [(lp[0], lp[1]), ("<|im_end|>", -9.0)] for lp in r.logprobs)
    # the emitted text is what those tokens decode to, up to the stop
    assert TOK.decode(used).startswith(r.content)


_R1_PIECES = ["Let me think.", " STOP", " more", "</think>", "The answer", " is 4.", "\n\n", WEATHER, " Paris"]
r1_texts = st.lists(st.sampled_from(_R1_PIECES), max_size=8).map("".join)


@SETTINGS
@given(data=st.data(), text=r1_texts, stops=st.sampled_from([[], ["STOP"], ["Paris"], ["</tool_call>"], ["\n\n"]]),
       finish=st.sampled_from(["stop", "length"]))
def test_parsed_output_does_not_depend_on_batching(data, text: str, stops: list[str], finish: str) -> None:
    """deepseek_r1 + hermes after the stop cut: the streamed result equals parsing the cut text whole."""
    ids = TOK.encode(text)
    full = TOK.decode(ids)
    cut, matched = earliest_stop(full, stops)
    r = run(choice(stops, parser=make("deepseek_r1", "hermes")), data.draw(splits(ids)), finish)
    expected = strip_ids(make("deepseek_r1", "hermes").parse_complete(full[:cut]))
    assert r.parsed() == expected
    want = "stop" if matched is not None else finish
    if want == "stop" and expected[2]:
        want = "tool_calls"
    assert r.state.finish_reason == want
    assert r.state.stop_reason == matched


# --- stop strings: examples ----------------------------------------------------------------------------
def test_stop_string_split_across_token_boundaries() -> None:
    groups = one_each("Hello world STOP here")  # ... ' world', ' S', 'T', 'O', 'P', ' here'
    r = run(choice(["STOP"]), groups)
    assert [s.content for s in r.steps] == ["H", "ell", "o", " world", " ", "", "", ""]
    assert r.steps[-1].finish_reason == "stop" and r.state.stop_reason == "STOP"
    assert r.state.completion_tokens == len(groups) - 1  # ' here' was never consumed


def test_false_start_of_a_stop_string_is_released() -> None:
    r = run(choice(["STOP"]), one_each("a STOMP b"))
    assert r.content == "a STOMP b" and r.state.finish_reason == "length"


def test_partial_stop_held_at_the_end_is_released() -> None:
    r = run(choice(["STOP"]), one_each("the end ST"), finish="length")
    assert r.content == "the end ST" and r.state.finish_reason == "length" and r.state.stop_reason is None


def test_stop_string_inside_a_multibyte_character_sequence() -> None:
    ids = TOK.encode("漢字です")  # byte-level pieces: no single token decodes to a character
    r = run(choice(["字"]), [[t] for t in ids])
    assert r.content == "漢" and r.state.stop_reason == "字"
    assert "\ufffd" not in r.content


def test_include_stop_str_in_output() -> None:
    r = run(choice(["STOP"], include_stop=True), one_each("Hello world STOP here"))
    assert r.content == "Hello world STOP" and r.state.stop_reason == "STOP"


def test_stop_string_found_in_the_final_output_overrides_length() -> None:
    r = run(choice(["STOP"]), [TOK.encode("one STOP two")], "length")
    assert r.content == "one " and r.state.finish_reason == "stop" and r.state.stop_reason == "STOP"


def test_first_of_several_stop_strings_wins() -> None:
    r = run(choice(["world", "Hello"]), one_each("Hello world"))
    assert r.content == "" and r.state.stop_reason == "Hello"


def test_include_stop_also_when_the_stop_is_found_at_end_of_stream() -> None:
    # "xab": "b" completes before "abc" could, so it wins (vLLM) and is added back, the stream's end changes nothing
    r = run(choice(["abc", "b"], include_stop=True), [TOK.encode("xab")], "length", finish_alone=True)
    assert r.state.stop_reason == "b"
    assert r.content == "xab"


def test_stop_that_completes_first_wins_over_one_that_starts_earlier() -> None:
    for groups in ([TOK.encode("xabcd")], one_each("xabcd")):
        r = run(choice(["abcd", "bc"]), groups)
        assert (r.content, r.state.stop_reason) == ("xa", "bc")


def test_stops_ending_at_the_same_place_rank_by_list_order() -> None:
    for stops, want in ((["abc", "bc"], ("x", "abc")), (["bc", "abc"], ("xa", "bc"))):
        for groups in ([TOK.encode("xabcd")], one_each("xabcd")):
            r = run(choice(stops), groups)
            assert (r.content, r.state.stop_reason) == want


def test_tied_stop_strings_resolve_the_same_however_batched() -> None:
    ids = TOK.encode("xaby")
    results = set()
    for groups in ([ids], [[t] for t in ids]):
        r = run(choice(["ab", "a"], include_stop=True), groups)
        results.add((r.content, r.state.stop_reason))
    assert len(results) == 1, results


# --- stop strings x reasoning / tool-call parsers ------------------------------------------------------
def test_stop_string_inside_reasoning_ends_the_choice_with_no_content() -> None:
    r = run(choice(["STOP"], parser=make("deepseek_r1")), one_each("I think STOP then</think>The answer."), "stop")
    assert (r.reasoning, r.content) == ("I think ", "")
    assert r.state.finish_reason == "stop" and r.state.stop_reason == "STOP"


def test_stop_string_inside_content_keeps_the_reasoning() -> None:
    r = run(choice(["STOP"], parser=make("deepseek_r1")), one_each("I think</think>The answer STOP more"), "stop")
    assert (r.reasoning, r.content) == ("I think", "The answer ")
    assert r.state.stop_reason == "STOP"


def test_reasoning_end_tag_split_across_outputs() -> None:
    ids = TOK.encode("thinking</think>done")
    r = run(choice(parser=make("deepseek_r1")), [[t] for t in ids], "stop")
    assert (r.reasoning, r.content) == ("thinking", "done")
    assert "</think>" not in r.reasoning + r.content


@pytest.mark.parametrize("finish,want", [("stop", "tool_calls"), ("length", "length")])
def test_tool_call_turns_a_stop_into_tool_calls(finish: str, want: str) -> None:
    text = "Let me think.</think>Checking." + WEATHER
    r = run(choice(parser=make("deepseek_r1", "hermes")), one_each(text), finish)
    reasoning, content, calls = r.parsed()
    assert (reasoning, content) == ("Let me think.", "Checking.")
    assert calls == [("get_weather", '{"city": "Paris", "days": 2}')]
    assert r.state.finish_reason == want and r.state.saw_tool_call


def test_stop_string_after_a_complete_tool_call_still_reports_tool_calls() -> None:
    text = "r</think>" + WEATHER + "\nSTOP and more"
    r = run(choice(["STOP"], parser=make("deepseek_r1", "hermes")), one_each(text), "length")
    assert r.parsed()[2] == [("get_weather", '{"city": "Paris", "days": 2}')]
    assert r.state.finish_reason == "tool_calls" and r.state.stop_reason == "STOP"


def test_tool_call_markup_in_reasoning_is_not_a_call() -> None:
    text = "maybe " + WEATHER + "</think>No call needed."
    r = run(choice(parser=make("deepseek_r1", "hermes")), one_each(text), "stop")
    assert r.parsed() == ("maybe " + WEATHER, "No call needed.", [])
    assert r.state.finish_reason == "stop"


# --- finish_reason / stop_reason ---------------------------------------------------------------------
def conditions(**kw) -> StopConditions:
    return StopConditions(max_tokens=64, eos_token_ids=[IM_END], **kw)


def test_stop_token_is_the_stop_reason() -> None:
    r = run(choice(stop_conditions=conditions(stop_token_ids=[7])), one_each("done"), "stop", stop_token_id=7)
    assert r.state.finish_reason == "stop" and r.state.stop_reason == 7


@pytest.mark.parametrize("stop_token_ids", [[], [IM_END]])
def test_eos_is_no_stop_reason(stop_token_ids: list[int]) -> None:
    # vLLM: stop_reason is null when EOS ends the reply (EOS is checked first, even when also a stop token id)
    r = run(choice(stop_conditions=conditions(stop_token_ids=stop_token_ids)), one_each("done"), "stop",
            stop_token_id=IM_END)
    assert r.state.finish_reason == "stop" and r.state.stop_reason is None


def test_eos_listed_as_stop_token_is_the_stop_reason_with_ignore_eos() -> None:
    r = run(choice(stop_conditions=conditions(stop_token_ids=[IM_END], ignore_eos=True)), one_each("done"), "stop",
            stop_token_id=IM_END)
    assert r.state.stop_reason == IM_END


def test_engine_stop_token_unknown_to_the_request_is_no_stop_reason() -> None:
    r = run(choice(), one_each("done"), "stop", stop_token_id=7)
    assert r.state.finish_reason == "stop" and r.state.stop_reason is None


def test_stop_token_ignored_as_reason_when_length() -> None:
    r = run(choice(), one_each("done"), "length", stop_token_id=7)
    assert r.state.finish_reason == "length" and r.state.stop_reason is None


@pytest.mark.parametrize("finish_alone", [False, True])
def test_stop_string_wins_over_the_engine_stop_token(finish_alone: bool) -> None:
    r = run(choice(["abc", "b"], stop_conditions=conditions(stop_token_ids=[7])), [TOK.encode("xab")], "stop",
            finish_alone=finish_alone, stop_token_id=7)
    assert r.content == "xa" and r.state.finish_reason == "stop" and r.state.stop_reason == "b"


@pytest.mark.parametrize("finish", ["abort", "error"])
def test_other_finish_reasons_pass_through(finish: str) -> None:
    r = run(choice(["STOP"]), one_each("partial"), finish)
    assert r.content == "partial" and r.state.finish_reason == finish and r.state.stop_reason is None


# --- special tokens -----------------------------------------------------------------------------------
@pytest.mark.parametrize("skip,want", [(True, "ab"), (False, "a<|im_end|>b")])
def test_skip_special_tokens(skip: bool, want: str) -> None:
    r = run(choice(skip_special_tokens=skip), one_each("a<|im_end|>b"))
    assert r.content == want


@pytest.mark.parametrize("skip,want,reason", [(True, "ab", None), (False, "a", "<|im_end|>")])
def test_stop_string_on_special_token_text_needs_it_in_the_text(skip: bool, want: str, reason) -> None:
    r = run(choice(["<|im_end|>"], skip_special_tokens=skip), one_each("a<|im_end|>b"))
    assert r.content == want and r.state.stop_reason == reason


def test_logprob_strings_show_special_tokens_even_when_skipped() -> None:
    r = run(choice(want_logprobs=True), one_each("a<|im_end|>b"), logprobs=True)
    assert r.content == "ab"
    assert [lp[0] for lp in r.logprobs] == ["a", "<|im_end|>", "b"]


# --- logprobs x stop strings ---------------------------------------------------------------------------
def test_logprobs_with_a_stop_string_one_token_per_output() -> None:
    groups = one_each("Hello world STOP here")
    r = run(choice(["STOP"], want_logprobs=True), groups, logprobs=True)
    assert [lp[0] for lp in r.logprobs] == ["H", "ell", "o", " world", " S", "T", "O", "P"]


def test_logprobs_and_usage_end_at_the_stop_however_batched() -> None:
    ids = TOK.encode("Hello world STOP here and more")
    one = run(choice(["STOP"], want_logprobs=True), [[t] for t in ids], logprobs=True)
    batched = run(choice(["STOP"], want_logprobs=True), [ids], logprobs=True)
    assert batched.content == one.content == "Hello world "
    assert [lp[0] for lp in batched.logprobs] == [lp[0] for lp in one.logprobs]
    assert batched.state.completion_tokens == one.state.completion_tokens
    assert sum(s.num_tokens for s in batched.steps) == batched.state.completion_tokens


@SETTINGS
@given(data=st.data(), text=texts, stops=stop_lists, include=st.booleans(), min_tokens=st.integers(0, 6),
       finish_alone=st.booleans())
def test_stop_result_does_not_depend_on_batching(data, text: str, stops: list[str], include: bool,
                                                 min_tokens: int, finish_alone: bool) -> None:
    """Text, stop_reason, usage and logprobs are those of the same tokens sent one per output."""
    ids = TOK.encode(text)

    def state() -> ChoiceState:
        return choice(stops, want_logprobs=True, include_stop=include,
                      stop_conditions=StopConditions(max_tokens=64, min_tokens=min_tokens))

    one = run(state(), [[t] for t in ids], logprobs=True)
    other = run(state(), data.draw(splits(ids)), logprobs=True, finish_alone=finish_alone)
    assert (other.content, other.state.stop_reason, other.state.finish_reason) == \
        (one.content, one.state.stop_reason, one.state.finish_reason)
    assert other.state.completion_tokens == one.state.completion_tokens
    assert sum(s.num_tokens for s in other.steps) == other.state.completion_tokens
    assert [lp[3] for lp in other.logprobs] == [lp[3] for lp in one.logprobs] == ids[:one.state.completion_tokens]


# --- min_tokens ----------------------------------------------------------------------------------------
def min_tokens(n: int) -> StopConditions:
    return StopConditions(max_tokens=64, min_tokens=n)


@pytest.mark.parametrize("batched", [False, True])
def test_no_stop_string_ends_within_min_tokens(batched: bool) -> None:
    text = "a STOP b STOP c"
    ids = TOK.encode(text)
    first = len(TOK.encode("a STOP"))  # the tokens up to the end of the first STOP
    groups = [ids] if batched else [[t] for t in ids]
    r = run(choice(["STOP"], stop_conditions=min_tokens(first)), groups)
    assert r.content == "a STOP b " and r.state.stop_reason == "STOP"
    r = run(choice(["STOP"], stop_conditions=min_tokens(first - 1)), groups)
    assert r.content == "a " and r.state.stop_reason == "STOP"


def test_a_stop_string_may_start_within_min_tokens() -> None:
    ids = TOK.encode("a STOP b")
    k = len(TOK.encode("a ST"))  # "ST" of the stop is within min_tokens, "OP" after
    assert TOK.decode(ids[:k]) == "a ST"
    for groups in ([ids], [[t] for t in ids]):
        r = run(choice(["STOP"], stop_conditions=min_tokens(k)), groups)
        assert r.content == "a " and r.state.stop_reason == "STOP" and r.state.completion_tokens == k + 2


def test_min_tokens_longer_than_the_reply_finds_no_stop() -> None:
    r = run(choice(["STOP"], stop_conditions=min_tokens(50)), one_each("a STOP b"), "length")
    assert r.content == "a STOP b" and r.state.finish_reason == "length" and r.state.stop_reason is None


def test_no_logprobs_unless_asked() -> None:
    r = run(choice(["STOP"]), one_each("a b STOP"), logprobs=True)
    assert r.logprobs == [] and all(s.logprobs is None for s in r.steps)


# --- counters -----------------------------------------------------------------------------------------
def test_keep_alive_output_is_an_empty_step() -> None:
    s = choice(["STOP"], parser=make("deepseek_r1", "hermes"), want_logprobs=True)
    step = s.on_output(EngineOutput())
    assert (step.content, step.reasoning, list(step.tool_calls), step.logprobs, step.finish_reason,
            step.num_tokens) == ("", "", [], None, None, 0)
    assert not s.done and s.completion_tokens == 0


def test_cached_tokens_come_from_the_output_that_reports_them() -> None:
    s = choice()
    s.on_output(EngineOutput(TOK.encode("a"), cached_tokens=32))
    s.on_output(EngineOutput(TOK.encode("b")))
    assert s.cached_tokens == 32
