"""Trace loading (mooncake JSONL) and synthetic prefix-group workloads."""

from __future__ import annotations

import io

import pytest

from dynamo_mono.block_hash import block_hashes
from mocker.traces import TraceError, load_mooncake, synthesize_prefix_groups


def test_mooncake_shared_hash_ids_give_shared_prefixes(tmp_path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [1, 2]}\n'
        '\n'
        '{"timestamp": 5, "input_length": 700, "output_length": 3, "hash_ids": [1, 9], "session_id": 4}\n')
    a, b = list(load_mooncake(str(path)))
    assert len(a.token_ids) == 1000 and len(b.token_ids) == 700
    assert a.token_ids[:512] == b.token_ids[:512] and a.token_ids[512:700] != b.token_ids[512:700]
    assert (a.timestamp_ms, a.output_length, a.session_id, b.session_id) == (0.0, 10, None, "4")
    ha, hb = block_hashes(a.token_ids, 64), block_hashes(b.token_ids, 64)
    assert ha[:8] == hb[:8] and ha[8] != hb[8]


@pytest.mark.parametrize("line, needle", [
    ('{"timestamp": 0, "output_length": 1, "hash_ids": []}', "line 2: missing field 'input_length'"),
    ('{"timestamp": 0, "input_length": "x", "output_length": 1}', "line 2: field 'input_length'"),
    ('not json', "line 2: invalid JSON"),
    ('{"timestamp": 0, "input_length": 3, "output_length": 1, "hash_ids": ["a"]}', "line 2: field 'hash_ids'"),
])
def test_bad_lines_name_line_and_field(line: str, needle: str) -> None:
    good = '{"timestamp": 0, "input_length": 4, "output_length": 1, "hash_ids": [1]}\n'
    it = load_mooncake(io.StringIO(good + line + "\n"))
    assert len(next(it).token_ids) == 4  # streaming: the good line is served before the bad one is read
    with pytest.raises(TraceError, match=needle.replace("(", r"\(")):
        next(it)


def test_prefix_groups_share_exactly_the_prefix() -> None:
    reqs = list(synthesize_prefix_groups(2, 3, prefix_len=600, suffix_len=100, output_length=7, interval_ms=10))
    assert len(reqs) == 6 and [r.timestamp_ms for r in reqs] == [i * 10.0 for i in range(6)]
    g0 = [r for r in reqs if r.session_id.startswith("g0")]
    g1 = [r for r in reqs if r.session_id.startswith("g1")]
    assert all(r.token_ids[:600] == g0[0].token_ids[:600] for r in g0)
    assert g0[0].token_ids[:600] != g1[0].token_ids[:600]
    assert len({tuple(r.token_ids[600:]) for r in reqs}) == 6
    assert all(len(r.token_ids) == 700 and r.output_length == 7 for r in reqs)
    again = list(synthesize_prefix_groups(2, 3, prefix_len=600, suffix_len=100, output_length=7, interval_ms=10))
    assert [r.token_ids for r in again] == [r.token_ids for r in reqs]
