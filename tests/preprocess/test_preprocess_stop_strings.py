"""Stop strings on streamed text: output is exactly the text before the earliest stop, however it is chunked."""

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


def _longest_partial(s: str, stops: list[str]) -> int:
    return max((k for k in range(1, len(s) + 1) for st_ in stops if len(st_) > k and st_.startswith(s[-k:])), default=0)


@settings(max_examples=400, deadline=None)
@given(text=text_st, stops=stops_st, cuts=cuts_st)
def test_output_is_text_before_earliest_stop(text: str, stops: list[str], cuts: list[int]) -> None:
    hits = [text.find(s) for s in stops if s in text]
    expected = text[: min(hits)] if hits else text

    m = StopMatcher(stops)
    out, matched, fed = "", None, ""
    for chunk in _chunks(text, cuts):
        fed += chunk
        piece, matched = m.feed(chunk)
        out += piece
        assert not any(s in out for s in stops)
        if matched is not None:
            break
        # Only the longest suffix that could still become a stop string is held back.
        assert out == fed[: len(fed) - _longest_partial(fed, stops)]
    if matched is None:
        out += m.flush()
        matched = m.matched
    assert out == expected
    assert not any(s in out for s in stops)
    if hits:
        assert matched is not None and text[len(expected) :].startswith(matched)
        assert m.matched == matched
    else:
        assert matched is None


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


def test_earlier_partial_stop_wins_over_later_complete_one() -> None:
    m = StopMatcher(["abc", "b"])
    assert m.feed("xab") == ("x", None)  # "b" is complete, but "abc" may start earlier
    assert m.feed("c!") == ("", "abc")
    m = StopMatcher(["abc", "b"])
    assert m.feed("xab") == ("x", None)
    assert m.feed("z") == ("a", "b")


def test_fast_path_returns_text_untouched() -> None:
    m = StopMatcher(["<|user|>", "###"])
    text = "plain text without any of the first characters"
    assert m.feed(text) == (text, None)
    assert m.feed("") == ("", None)


def test_empty_and_duplicate_stops_are_ignored() -> None:
    m = StopMatcher(["", "x", "x"])
    assert m.feed("abxcd") == ("ab", "x")
    assert StopMatcher([""]).feed("abc") == ("abc", None)
