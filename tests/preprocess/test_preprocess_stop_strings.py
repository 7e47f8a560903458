"""Stop strings on streamed text: output is the text before the stop that completes first, however it is chunked."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamo_mono.preprocess import StopMatcher

ALPHABET = "ab\n😀é"
stops_st = st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=4), min_size=1, max_size=4)
text_st = st.text(alphabet=ALPHABET, max_size=40)
cuts_st = st.lists(st.integers(min_value=0, max_value=40), max_size=10)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


def _first_completed(text: str, stops: list[str], floor: int = 0) -> tuple[int, str | None]:
    """(start, stop) of the stop ending first past `floor` in text, first listed on a tie (vLLM); (len, None)."""
    hits = []
    for k, s in enumerate(stops):
        i = text.find(s, max(0, floor - len(s) + 1))
        if i != -1:
            hits.append((i + len(s), k, s))
    if not hits:
        return len(text), None
    end, _, stop = min(hits)
    return end - len(stop), stop


def _longest_partial(s: str, stops: list[str]) -> int:
    return max((k for k in range(1, len(s) + 1) for st_ in stops if len(st_) > k and st_.startswith(s[-k:])), default=0)


@settings(max_examples=400, deadline=None)
@given(text=text_st, stops=stops_st, cuts=cuts_st)
def test_output_is_text_before_the_stop_completed_first(text: str, stops: list[str], cuts: list[int]) -> None:
    cut, first = _first_completed(text, stops)
    expected = text[:cut]

    m = StopMatcher(stops)
    out, matched, fed = "", None, ""
    for chunk in _chunks(text, cuts):
        fed += chunk
        piece, matched = m.feed(chunk)
        out += piece
        if matched is not None:
            break
        # Only the longest suffix that could still become a stop string is held back.
        assert out == fed[: len(fed) - _longest_partial(fed, stops)]
    if matched is None:
        out += m.flush()
        matched = m.matched
    assert out == expected
    assert matched == m.matched == first


@settings(max_examples=400, deadline=None)
@given(text=text_st, stops=stops_st, cuts=cuts_st, protected=st.integers(min_value=0, max_value=40))
def test_no_stop_ends_in_skipped_text(text: str, stops: list[str], cuts: list[int], protected: int) -> None:
    """The first `protected` characters go through skip (min_tokens): a stop may start there, not end there."""
    protected = min(protected, len(text))
    cut, first = _first_completed(text, stops, protected)
    m = StopMatcher(stops)
    out, matched = "", None
    for chunk in _chunks(text[:protected], cuts):
        out += m.skip(chunk)
    for chunk in _chunks(text[protected:], cuts):
        piece, matched = m.feed(chunk)
        out += piece
        if matched is not None:
            break
    if matched is None:
        out += m.flush()
    assert (out, m.matched) == (text[:cut], first)


def test_match_across_feed_boundaries() -> None:
    m = StopMatcher(["</answer>"])
    assert m.feed("The result is 4</an") == ("The result is 4", None)
    assert m.feed("swer> trailing") == ("", "</answer>")
    assert m.feed("more") == ("", None)  # everything after a match is dropped
    assert m.flush() == ""


def test_false_start_is_released() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("a ST") == ("a ", None)
    assert m.feed("ART") == ("START", None)
    assert m.flush() == ""


def test_held_text_released_at_end_of_stream() -> None:
    m = StopMatcher(["\n\nUser:"])
    assert m.feed("done\n\nUse") == ("done", None)
    assert m.flush() == "\n\nUse"
    assert m.matched is None


def test_the_stop_completed_first_wins_over_one_started_earlier() -> None:
    m = StopMatcher(["abc", "b"])
    assert m.feed("xab") == ("xa", "b")  # "abc" could only complete later (vLLM checks after each token)
    m = StopMatcher(["abc", "b"])
    assert m.feed("xa") == ("x", None)
    assert m.feed("bc") == ("a", "b")
    m = StopMatcher(["abcd", "bc"])
    assert m.feed("xabcd") == ("xa", "bc")


def test_stops_ending_at_the_same_place_rank_by_list_order() -> None:
    assert StopMatcher(["abc", "bc"]).feed("xabc") == ("x", "abc")
    assert StopMatcher(["bc", "abc"]).feed("xabc") == ("xa", "bc")
    m = StopMatcher(["ab", "a"])
    assert m.feed("xab") == ("x", "a")


def test_skip_holds_a_possible_start_and_matches_nothing_inside() -> None:
    m = StopMatcher(["STOP"])
    assert m.skip("a STOP S") == "a STOP "
    assert m.feed("TOP!") == ("", "STOP")
    m = StopMatcher(["STOP", "OP"])
    assert m.skip("a ST") == "a "
    assert m.skip("O") == ""  # "STO" may still become STOP
    assert m.feed("P b") == ("", "STOP")  # STOP and OP both end at the first fed character: list order


def test_fast_path_returns_text_untouched() -> None:
    m = StopMatcher(["<|user|>", "###"])
    text = "plain text without any of the first characters"
    assert m.feed(text) == (text, None)
    assert m.feed("") == ("", None)


def test_empty_and_duplicate_stops_are_ignored() -> None:
    m = StopMatcher(["", "x", "x"])
    assert m.feed("abxcd") == ("ab", "x")
    assert StopMatcher([""]).feed("abc") == ("abc", None)
