"""Block hashes with media: each item's content hash is mixed into every block its placeholders overlap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from dynamo_mono.block_hash import MediaSpan, block_hash, block_hashes, block_media

U64 = st.integers(0, (1 << 64) - 1)


@st.composite
def prompts(draw, min_spans: int = 1):
    """(tokens, block_size, spans): spans lie inside the full blocks, possibly overlapping each other."""
    bs = draw(st.integers(1, 8))
    n_blocks = draw(st.integers(1, 12))
    tokens = draw(st.lists(st.integers(0, 200_000), min_size=n_blocks * bs, max_size=n_blocks * bs + bs - 1))
    n_full = n_blocks * bs
    spans = draw(st.lists(
        st.builds(lambda h, s, ln: MediaSpan(h, s, max(1, min(ln, n_full - s))),
                  U64, st.integers(0, n_full - 1), st.integers(1, 3 * bs)),
        min_size=min_spans, max_size=4))
    return tokens, bs, spans


def first_block(spans: list[MediaSpan], bs: int) -> int:
    return min(s.start for s in spans) // bs


def test_no_media_results_are_unchanged():
    # Pinned from the implementation before media existed: the hot path must hash exactly as it did.
    assert block_hashes(list(range(1000, 1020)), 4) == [
        17686776366235507113, 17132255758346871373, 7633622671525725644, 3405387910161241650,
        15916156318223395251]
    assert block_hashes([7] * 9, 4, parent=12345) == [14055402009193254255, 2549744906655575907]
    assert block_hashes(list(range(1000, 1020)), 4, media=()) == block_hashes(list(range(1000, 1020)), 4)


@settings(max_examples=200, deadline=None)
@given(prompts(min_spans=0))
def test_batch_equals_chained_single_block_hashes(p):
    tokens, bs, spans = p
    n = len(tokens) // bs
    touched = block_media(n, bs, spans)
    prev, expect = None, []
    for i in range(n):
        prev = block_hash(prev, tokens[i * bs:(i + 1) * bs], touched.get(i, ()))
        expect.append(prev)
    assert block_hashes(tokens, bs, media=spans) == expect


@settings(max_examples=200, deadline=None)
@given(prompts())
def test_media_changes_blocks_from_the_first_media_block_on(p):
    tokens, bs, spans = p
    plain = block_hashes(tokens, bs)
    mixed = block_hashes(tokens, bs, media=spans)
    first = first_block(spans, bs)
    assert mixed[:first] == plain[:first]
    assert all(a != b for a, b in zip(mixed[first:], plain[first:]))


@settings(max_examples=200, deadline=None)
@given(prompts(), st.randoms(use_true_random=False))
def test_equal_media_hashes_give_equal_block_hashes(p, rnd):
    tokens, bs, spans = p
    shuffled = list(spans)
    rnd.shuffle(shuffled)  # the order spans are listed in does not matter, only their positions
    copies = [MediaSpan(s.content_hash, s.start, s.length) for s in shuffled]
    assert block_hashes(tokens, bs, media=copies) == block_hashes(tokens, bs, media=spans)


@settings(max_examples=200, deadline=None)
@given(prompts(), st.data())
def test_a_different_media_hash_changes_blocks_from_its_first_block_on(p, data):
    tokens, bs, spans = p
    i = data.draw(st.integers(0, len(spans) - 1))
    other = data.draw(U64.filter(lambda h: h != spans[i].content_hash))
    changed = list(spans)
    changed[i] = MediaSpan(other, spans[i].start, spans[i].length)
    a = block_hashes(tokens, bs, media=spans)
    b = block_hashes(tokens, bs, media=changed)
    first = spans[i].start // bs
    assert a[:first] == b[:first]
    assert all(x != y for x, y in zip(a[first:], b[first:]))


def test_span_order_inside_one_block_matters():
    # Two images in one block with identical placeholder tokens: A-then-B is not B-then-A.
    tokens = [9] * 8
    ab = block_hashes(tokens, 8, media=[MediaSpan(1, 0, 4), MediaSpan(2, 4, 4)])
    ba = block_hashes(tokens, 8, media=[MediaSpan(2, 0, 4), MediaSpan(1, 4, 4)])
    assert ab != ba


def test_span_overlapping_several_blocks_and_the_partial_tail():
    tokens = list(range(10))  # blocks [0:4], [4:8]; tokens 8, 9 are a partial block (never hashed)
    assert block_media(2, 4, [MediaSpan(5, 3, 7)]) == {0: [5], 1: [5]}
    assert block_hashes(tokens, 4, media=[MediaSpan(5, 8, 2)]) == block_hashes(tokens, 4)
    assert block_hashes(tokens[:3], 4, media=[MediaSpan(5, 0, 2)]) == []


@pytest.mark.parametrize("args", [(-1, 0, 1), (1 << 64, 0, 1), (1, -1, 1), (1, 0, 0)])
def test_media_span_refuses_bad_values(args):
    with pytest.raises(ValueError):
        MediaSpan(*args)
