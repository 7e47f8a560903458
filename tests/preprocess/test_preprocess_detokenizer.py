"""Incremental detokenization: streamed pieces add up to the full decode and never show half a character."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamo_mono.preprocess import IncrementalDetokenizer, Tokenizer, load_model_dir

TOK: Tokenizer = load_model_dir(None).tokenizer
MODES = [pytest.param(None, id="byte_table"), pytest.param(True, id="decode_stream"),
         pytest.param(False, id="offset_window")]

_MIXED = list("aé漢字😀🚀👍🏽ñ中文日本語한국어Ωπ∑€ \n\t") + ["e\u0301", "🇫🇷", "👨‍👩‍👧", "<|im_end|>", "<think>", "</tool_call>"]
texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(_MIXED), max_size=30).map("".join),
    st.lists(st.sampled_from(["Hello", " world", ",", " 東京", " café", "🤖", "\n", " 123", "{\"a\": 1}"]), max_size=20).map("".join),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _stream(detok: IncrementalDetokenizer, groups: list[list[int]]) -> list[str]:
    pieces = [detok.add(g) for g in groups]
    pieces.append(detok.flush())
    return pieces


def _split(ids: list[int], cuts: list[int]) -> list[list[int]]:
    points = sorted({c % (len(ids) + 1) for c in cuts} | {0, len(ids)})
    return [ids[a:b] for a, b in zip(points, points[1:])]


@pytest.mark.parametrize("use_stream", MODES)
@SETTINGS
@given(text=texts, skip=st.booleans())
def test_one_token_at_a_time_matches_full_decode(use_stream: bool, text: str, skip: bool) -> None:
    ids = TOK.encode(text)
    full = TOK.decode(ids, skip_special_tokens=skip)
    pieces = _stream(IncrementalDetokenizer(TOK, skip_special_tokens=skip, use_decode_stream=use_stream), [[i] for i in ids])
    assert "".join(pieces) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("use_stream", MODES)
@SETTINGS
@given(text=texts, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_random_groups_match_full_decode(use_stream: bool, text: str, cuts: list[int]) -> None:
    ids = TOK.encode(text)
    full = TOK.decode(ids)
    pieces = _stream(IncrementalDetokenizer(TOK, use_decode_stream=use_stream), _split(ids, cuts))
    assert "".join(pieces) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in p for p in pieces)


@pytest.mark.parametrize("use_stream", MODES)
@SETTINGS
@given(ids=st.lists(st.integers(min_value=0, max_value=TOK.vocab_size - 1), max_size=40))
def test_arbitrary_token_soup_matches_full_decode(use_stream: bool, ids: list[int]) -> None:
    # Random ids make invalid UTF-8 byte runs; those must come out as U+FFFD exactly like a full decode.
    pieces = _stream(IncrementalDetokenizer(TOK, use_decode_stream=use_stream), [[i] for i in ids])
    assert "".join(pieces) == TOK.decode(ids)


@pytest.mark.parametrize("use_stream", MODES)
def test_partial_character_is_held_until_complete(use_stream: bool) -> None:
    ids = TOK.encode("ok 𝔘!")  # the rare 4-byte char is split into single-byte tokens
    detok = IncrementalDetokenizer(TOK, use_decode_stream=use_stream)
    pieces = [detok.add([i]) for i in ids]
    assert "".join(pieces) == "ok 𝔘!"
    assert "𝔘" in pieces  # emitted whole, in one piece
    assert pieces.count("") >= 3  # the first three bytes gave nothing
    assert detok.flush() == ""


@pytest.mark.parametrize("use_stream", MODES)
def test_invalid_bytes_become_replacement_char_at_flush(use_stream: bool) -> None:
    lead_byte = TOK.token_to_id("ð")  # 0xF0 starts a 4-byte sequence that never completes
    assert lead_byte is not None
    detok = IncrementalDetokenizer(TOK, use_decode_stream=use_stream)
    assert detok.add(TOK.encode("hi")) == "hi"
    assert detok.add([lead_byte]) == ""
    assert detok.flush() == "\ufffd"


@pytest.mark.parametrize("use_stream", MODES)
def test_special_tokens_skipped_or_kept(use_stream: bool) -> None:
    ids = TOK.encode("<|im_start|>assistant\n<think>hm</think>Hi<|im_end|>")
    assert TOK.token_to_id("<|im_end|>") in ids
    skipped = IncrementalDetokenizer(TOK, skip_special_tokens=True, use_decode_stream=use_stream)
    assert "".join(skipped.add([i]) for i in ids) + skipped.flush() == "assistant\n<think>hm</think>Hi"
    kept = IncrementalDetokenizer(TOK, skip_special_tokens=False, use_decode_stream=use_stream)
    assert "".join(kept.add([i]) for i in ids) + kept.flush() == "<|im_start|>assistant\n<think>hm</think>Hi<|im_end|>"


@pytest.mark.parametrize("use_stream", MODES)
def test_prompt_tail_is_context_not_output(use_stream: bool) -> None:
    prompt = TOK.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    gen = TOK.encode(" Hello 世界")
    detok = IncrementalDetokenizer(TOK, prompt_tail=prompt, use_decode_stream=use_stream)
    assert "".join(detok.add([i]) for i in gen) + detok.flush() == " Hello 世界"


def test_empty_add_and_repeated_flush() -> None:
    detok = IncrementalDetokenizer(TOK)
    assert detok.add([]) == ""
    assert detok.flush() == ""
    assert detok.add(TOK.encode("x")) == "x"
    assert detok.flush() == ""


class _RefusingStream:
    def step(self, tokenizer: object, ids: object) -> str:
        raise Exception("DecodeStreamError: invalid prefix")


def test_decode_stream_error_falls_back_without_losing_text() -> None:
    text = "Hello 東京 𝔘 wörld 🤖! more text after the switch"
    ids = TOK.encode(text)
    detok = IncrementalDetokenizer(TOK, use_decode_stream=True)
    out = "".join(detok.add([i]) for i in ids[:6])
    detok._stream = _RefusingStream()  # the next step raises inside tokenizers
    out += "".join(detok.add([i]) for i in ids[6:]) + detok.flush()
    assert out == text


@pytest.mark.parametrize("use_stream", MODES)
def test_long_stream_matches_full_decode(use_stream: bool) -> None:
    # Long enough that emitted ids are compacted away several times.
    text = "".join(f"line {i}: café 東京 🚀 𝔘{i % 7}\n" for i in range(300))
    ids = TOK.encode(text)
    assert len(ids) > 3000
    detok = IncrementalDetokenizer(TOK, use_decode_stream=use_stream)
    pieces = []
    i = 0
    while i < len(ids):
        step = 1 + i % 3
        pieces.append(detok.add(ids[i : i + step]))
        i += step
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert len(detok._ids) <= 1100
