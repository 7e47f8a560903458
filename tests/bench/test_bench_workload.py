"""Workload generators, length distributions and config validation of `dynamo-mono bench`."""

import random

import orjson
import pytest

from dynamo_mono.bench.config import BenchConfig, BenchConfigError, Dist, parse_dist
from dynamo_mono.bench.workload import WordPool, generate, take


@pytest.fixture(scope="module")
def pool() -> WordPool:
    return WordPool()


def _content(body: bytes) -> str:
    return orjson.loads(body)["messages"][0]["content"]


def test_parse_dist_forms():
    assert parse_dist("512") == Dist("fixed", 512)
    assert parse_dist("fixed:7") == Dist("fixed", 7)
    assert parse_dist("normal:512:64") == Dist("normal", 512, 64)
    assert parse_dist("uniform:10:20") == Dist("uniform", 10, 20)
    for bad in ("0", "x", "normal:5", "uniform:20:10", "gauss:1:2", "-3"):
        with pytest.raises(BenchConfigError, match="--isl"):
            parse_dist(bad, "--isl")


def test_dist_samples_stay_in_range():
    rng = random.Random(1)
    u = [Dist("uniform", 10, 20).sample(rng) for _ in range(500)]
    assert min(u) >= 10 and max(u) <= 20 and len(set(u)) > 5
    n = [Dist("normal", 100, 10).sample(rng) for _ in range(2000)]
    assert 95 < sum(n) / len(n) < 105 and min(n) >= 1


def test_chat_prompt_token_count_matches_isl(pool):
    cfg = BenchConfig(url="http://x", isl=Dist("fixed", 300), osl=Dist("fixed", 9))
    p = take(generate(cfg, pool, "m"), 1)[0]
    body = orjson.loads(p.body)
    assert body["max_tokens"] == 9 and body["ignore_eos"] is True and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    rendered = pool.tokenizer.encode(_content(p.body))
    assert len(rendered) + pool.chat_overhead == 300 == p.isl


def test_completions_tokens_sends_exact_ids(pool):
    cfg = BenchConfig(url="http://x", api="completions-tokens", isl=Dist("fixed", 50), stream=False)
    body = orjson.loads(take(generate(cfg, pool, "m"), 1)[0].body)
    assert len(body["prompt"]) == 50 and all(isinstance(t, int) for t in body["prompt"])
    assert "stream_options" not in body


def test_ignore_eos_off_for_distributions_unless_asked(pool):
    cfg = BenchConfig(url="http://x", osl=Dist("uniform", 5, 9))
    assert "ignore_eos" not in orjson.loads(take(generate(cfg, pool, "m"), 1)[0].body)
    cfg = BenchConfig(url="http://x", osl=Dist("fixed", 5), eos_field="nvext")
    assert orjson.loads(take(generate(cfg, pool, "m"), 1)[0].body)["nvext"] == {"ignore_eos": True}


def test_random_prompts_differ(pool):
    ps = take(generate(BenchConfig(url="http://x", isl=Dist("fixed", 64)), pool, "m"), 3)
    assert len({_content(p.body) for p in ps}) == 3


def test_shared_prefix_shares_prefix(pool):
    cfg = BenchConfig(url="http://x", workload="shared-prefix", prefix_len=40, isl=Dist("fixed", 100))
    a, b = (pool.tokenizer.encode(_content(p.body)) for p in take(generate(cfg, pool, "m"), 2))
    assert a[:40] == b[:40] and a != b


def test_prefix_groups_rounds(pool):
    """Each round of G requests holds every group once (in a shuffled order); users' suffixes differ."""
    cfg = BenchConfig(url="http://x", workload="prefix-groups", num_groups=3, prefix_len=32, isl=Dist("fixed", 80))
    toks = [pool.tokenizer.encode(_content(p.body)) for p in take(generate(cfg, pool, "m"), 9)]
    rounds = [sorted(tuple(t[:32]) for t in toks[i:i + 3]) for i in (0, 3, 6)]
    assert rounds[0] == rounds[1] == rounds[2] and len(set(rounds[0])) == 3
    assert len({tuple(t) for t in toks}) == 9
    orders = [[tuple(t[:32]) for t in toks[i:i + 3]] for i in (0, 3, 6)]
    assert len({tuple(o) for o in orders}) > 1, "group order should vary between rounds"


def test_trace_replay_times_and_lengths(pool, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 1000, "input_length": 40, "output_length": 5, "hash_ids": [1]}\n'
                     '{"timestamp": 1500, "input_length": 60, "output_length": 7, "hash_ids": [1, 2]}\n')
    cfg = BenchConfig(url="http://x", api="completions-tokens", workload=f"trace:{trace}", trace_time_scale=2.0)
    ps = list(generate(cfg, pool, "m"))
    assert [p.at_s for p in ps] == [0.0, 1.0] and [p.osl for p in ps] == [5, 7]
    a, b = (orjson.loads(p.body)["prompt"] for p in ps)
    assert len(a) == 40 and len(b) == 60 and a == b[:40]  # same first hash id, same tokens


@pytest.mark.parametrize("kw, msg", [({"api": "grpc"}, "--api"), ({"concurrency": 0}, "--concurrency"),
                                     ({"workload": "trace"}, "--workload"), ({"request_rate": 0.0}, "--request-rate"),
                                     ({"num_requests": None}, "--num-requests")])
def test_config_validation_names_the_option(kw, msg):
    with pytest.raises(BenchConfigError, match=msg):
        BenchConfig(url="http://x", **kw).validate()
