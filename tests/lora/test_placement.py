"""HRW placement properties, lora_id and the adapter block-hash seed, and the load estimator's decisions."""

from __future__ import annotations


from hypothesis import given, settings, strategies as st

from dynamo_mono.block_hash import SEED, block_hashes, lora_seed
from dynamo_mono.lora.estimator import LoadEstimator, ScalePolicy
from dynamo_mono.lora.ids import lora_id
from dynamo_mono.lora.placement import hrw_score, replica_set

keys_st = st.sets(st.tuples(st.integers(0, 2 ** 40), st.integers(0, 7)), min_size=1, max_size=24)
names_st = st.text(min_size=1, max_size=20)


def test_lora_id_vector() -> None:
    assert lora_id("test_lora") == 1983627077
    assert all(1 <= lora_id(f"a{i}") <= 0x7FFFFFFF for i in range(100))


def test_score_is_blake3_of_name_worker_rank() -> None:
    import blake3

    data = b"x" + (5).to_bytes(8, "little") + (1).to_bytes(4, "little")
    assert hrw_score("x", (5, 1)) == int.from_bytes(blake3.blake3(data).digest()[:8], "little")


@settings(max_examples=200, deadline=None)
@given(names_st, keys_st, st.integers(0, 30), st.randoms())
def test_stable_under_permutation_and_sized(name, keys, factor, rnd) -> None:
    ks = list(keys)
    a = replica_set(name, ks, factor)
    rnd.shuffle(ks)
    assert replica_set(name, ks, factor) == a
    assert len(a) == (len(ks) if factor == 0 else min(factor, len(ks)))
    assert len(set(a)) == len(a)


@settings(max_examples=200, deadline=None)
@given(names_st, keys_st, st.tuples(st.integers(0, 2 ** 40), st.integers(0, 7)), st.integers(1, 8))
def test_minimal_movement(name, keys, extra, factor) -> None:
    ks = set(keys) - {extra}
    if not ks:
        return
    before = set(replica_set(name, ks, factor))
    after = set(replica_set(name, ks | {extra}, factor))
    # Adding one instance moves at most one replica, and only onto the new instance.
    assert after - before <= {extra}
    assert len(before - after) <= 1
    # Removing an instance outside the replica set moves nothing; removing a member replaces only it.
    gone = next(iter(ks))
    rest = set(replica_set(name, ks - {gone}, factor))
    if gone not in before:
        assert rest == before
    else:
        assert before - {gone} <= rest and len(rest - before) <= 1


def test_spread_over_instances() -> None:
    keys = [(w, 0) for w in range(4)]
    firsts = [replica_set(f"adapter-{i}", keys, 1)[0] for i in range(400)]
    assert all(firsts.count(k) > 50 for k in keys)  # ~100 each


def test_lora_seed_separates_hash_spaces() -> None:
    toks = list(range(64))
    base = block_hashes(toks, 16)
    a = block_hashes(toks, 16, seed=lora_seed("a"))
    b = block_hashes(toks, 16, seed=lora_seed("b"))
    assert lora_seed(None) == SEED and block_hashes(toks, 16, seed=lora_seed(None)) == base
    assert not (set(base) & set(a)) and not (set(a) & set(b))


def test_estimator_hysteresis() -> None:
    est = LoadEstimator(ScalePolicy(base=1, maximum=3, up=4.0, down=1.0, window=3))
    f = 1
    for _ in range(2):
        est.sample("a", 10)
        assert est.decide("a", f, 1, 4) == f  # window not full yet
    est.sample("a", 10)
    f = est.decide("a", f, 1, 4)
    assert f == 2
    for _ in range(3):  # 5 per replica on 2 replicas: still hot
        est.sample("a", 10)
    f = est.decide("a", f, 2, 4)
    assert f == 3
    for _ in range(3):
        est.sample("a", 30)
    assert est.decide("a", f, 3, 4) == 3  # the maximum
    for _ in range(3):  # between the thresholds: stays
        est.sample("a", 6)
    assert est.decide("a", f, 3, 4) == 3
    for _ in range(3):
        est.sample("a", 0)
    f = est.decide("a", f, 3, 4)
    assert f == 2
    for _ in range(3):
        est.sample("a", 0)
    f = est.decide("a", f, 2, 4)
    for _ in range(3):
        est.sample("a", 0)
    assert est.decide("a", f, 1, 4) == 1  # never below the base factor
