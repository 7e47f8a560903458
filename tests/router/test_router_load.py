"""Active load accounting: prefill tokens until first token, decode blocks with and without KV reuse."""

from __future__ import annotations

from tests.router.router_helpers import BS, make_router, prompt

from dynamo_mono.router.load import ActiveLoad


def test_prefill_tokens_move_to_decode_at_first_token() -> None:
    router = make_router(1)
    _, hashes = prompt(1, 4)
    router.select("a", hashes, 4 * BS + 2)
    assert router.load()[(0, 0)] == {"active_prefill_tokens": 18, "active_decode_blocks": 5,
                                      "active_requests": 1, "total_blocks": None}
    router.on_first_token("a")
    router.on_first_token("a")
    assert router.load()[(0, 0)]["active_prefill_tokens"] == 0
    assert router.load()[(0, 0)]["active_decode_blocks"] == 5
    router.on_finish("a")
    router.on_finish("a")
    assert router.load()[(0, 0)] == {"active_prefill_tokens": 0, "active_decode_blocks": 0,
                                      "active_requests": 0, "total_blocks": None}


def test_cached_prefix_is_not_counted_as_prefill() -> None:
    load = ActiveLoad(BS)
    load.add_instance((0, 0))
    load.start("a", (0, 0), prompt(2, 4)[1], 16, overlap_blocks=3)
    assert load.loads[(0, 0)].prefill_tokens == 4


def test_shared_prefix_counts_once_with_kv_reuse_and_twice_without() -> None:
    _, hashes = prompt(3, 6)
    _, other = prompt(4, 2)
    for reuse, expected in ((True, 8), (False, 12)):
        load = ActiveLoad(BS, assume_kv_reuse=reuse)
        load.add_instance((0, 0))
        load.start("a", (0, 0), hashes, 6 * BS, 0)
        load.start("b", (0, 0), hashes[:4] + other, 6 * BS, 0)  # shares 4 blocks with "a"
        assert load.loads[(0, 0)].decode_blocks == expected
        load.finish("a")
        assert load.loads[(0, 0)].decode_blocks == 6
        load.finish("b")
        assert load.loads[(0, 0)].decode_blocks == 0 and not load.loads[(0, 0)].shared


def test_output_blocks_tracked_only_when_enabled() -> None:
    _, hashes = prompt(5, 2)
    for track, expected in ((True, 5), (False, 2)):
        router = make_router(1, router_track_output_blocks=track)
        router.select("a", hashes, 2 * BS)
        for _ in range(9):
            router.on_tokens("a", 1)  # 8 + 9 tokens = 17 -> 5 blocks of 4
        assert router.load()[(0, 0)]["active_decode_blocks"] == expected
        router.on_finish("a")
        assert router.load()[(0, 0)]["active_decode_blocks"] == 0


def test_expected_output_blocks_are_counted_up_front_and_not_twice() -> None:
    _, hashes = prompt(6, 2)
    for track in (True, False):
        router = make_router(1, router_track_output_blocks=track)
        router.select("a", hashes, 2 * BS, expected_output_tokens=9)  # 8 + 9 tokens -> 5 blocks of 4
        assert router.load()[(0, 0)]["active_decode_blocks"] == 5
        for _ in range(9):
            router.on_tokens("a", 1)  # within the reservation: no growth
        assert router.load()[(0, 0)]["active_decode_blocks"] == 5
        for _ in range(4):
            router.on_tokens("a", 1)  # past it (21 tokens -> 6 blocks) only when output is tracked
        assert router.load()[(0, 0)]["active_decode_blocks"] == (6 if track else 5)
        router.on_finish("a")
        assert router.load()[(0, 0)]["active_decode_blocks"] == 0


def test_untracked_blocks_when_disabled() -> None:
    router = make_router(1, router_track_active_blocks=False)
    router.select("a", prompt(6, 3)[1], 12)
    assert router.load()[(0, 0)]["active_decode_blocks"] == 0
    assert router.load()[(0, 0)]["active_requests"] == 1


def test_reselecting_a_request_moves_its_load() -> None:
    router = make_router(2)
    _, hashes = prompt(7, 2)
    router.select("a", hashes, 8, pinned=(0, 0))
    router.select("a", hashes, 8, pinned=(1, 0))  # e.g. migration to another instance
    load = router.load()
    assert load[(0, 0)]["active_requests"] == 0 and load[(1, 0)]["active_requests"] == 1


def test_dispatch_after_select_does_not_double_count() -> None:
    router = make_router(2)
    _, hashes = prompt(8, 3)
    sel = router.select("a", hashes, 12, allowed=[(0, 0), (1, 0)])
    router.on_dispatch("a", sel, 12)
    assert router.load()[sel.key]["active_requests"] == 1
    assert router.load()[sel.key]["active_decode_blocks"] == 3
