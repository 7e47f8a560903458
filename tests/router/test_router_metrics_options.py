"""Router metrics on a Prometheus registry and router options (Dynamo names, env vars, aliases)."""

from __future__ import annotations

import argparse

import pytest

from prometheus_client import CollectorRegistry, generate_latest
from tests.router.router_helpers import cache, make_router, prompt

from dynamo_mono.config import ConfigError, add_to_parser, defaults, resolve
from dynamo_mono.router import ROUTER_OPTIONS


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def sample(registry: CollectorRegistry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels)


def test_decision_metrics_and_instance_series_removed_on_leave() -> None:
    reg = CollectorRegistry()
    router = make_router(2, registry=reg)
    _, hashes = prompt(1, 4)
    cache(router, (1, 0), hashes[:3])
    router.select("a", hashes, 16)
    router.observe_block_hashing_ms(0.02)
    lbl = {"model": "m", "worker_id": "1", "dp_rank": "0"}
    assert sample(reg, "dynamo_component_router_requests_total", **lbl) == 1
    assert sample(reg, "dynamo_component_router_active_requests", **lbl) == 1
    assert sample(reg, "dynamo_component_router_active_prefill_tokens", **lbl) == 4
    assert sample(reg, "dynamo_component_router_active_decode_blocks", **lbl) == 4
    assert sample(reg, "dynamo_component_router_kv_hit_rate_sum", model="m") == 0.75
    for name in ("block_hashing", "indexer_find_matches", "scheduling", "total"):
        assert sample(reg, f"dynamo_router_overhead_{name}_ms_count", model="m") == 1
    router.remove_instance((1, 0))
    text = scrape(reg)
    assert 'worker_id="1"' not in text and 'worker_id="0"' in text


def test_two_routers_share_a_registry() -> None:
    reg = CollectorRegistry()
    a = make_router(1, registry=reg)
    b = make_router(1, registry=reg)
    b.model = b.metrics.model = "other"
    a.select("x", [], 4)
    b.select("y", [], 4)
    b.select("z", [], 4)
    base = {"worker_id": "0", "dp_rank": "0"}
    assert sample(reg, "dynamo_component_router_requests_total", model="m", **base) == 1
    assert sample(reg, "dynamo_component_router_requests_total", model="other", **base) == 2
    b.close()
    assert 'model="other"' not in scrape(reg)


def test_defaults_follow_dynamo() -> None:
    s = defaults(ROUTER_OPTIONS)
    # The overlap weight is the exception: 8.0, measured (docs/router.md), where Dynamo has 1.0.
    assert (s.router_mode, s.router_kv_overlap_score_weight, s.router_temperature) == ("round-robin", 8.0, 0.0)
    assert (s.router_kv_events, s.router_ttl_secs, s.router_max_tree_size, s.router_prune_target_ratio) == \
        (True, 120.0, 2**20, 0.8)
    assert (s.router_assume_kv_reuse, s.router_track_active_blocks, s.router_track_output_blocks) == \
        (True, True, False)
    assert s.active_decode_blocks_threshold is None and s.active_prefill_tokens_threshold is None
    assert all(o.group == "router" for o in ROUTER_OPTIONS)


def test_env_and_cli_spellings() -> None:
    env = {"DYN_ROUTER_USE_KV_EVENTS": "false", "DYN_ROUTER_MODE": "kv", "DYN_ACTIVE_DECODE_BLOCKS_THRESHOLD": "0.9"}
    s = resolve(ROUTER_OPTIONS, {}, env=env)
    assert (s.router_kv_events, s.router_mode, s.active_decode_blocks_threshold) == (False, "kv", 0.9)
    parser = argparse.ArgumentParser()
    add_to_parser(parser, ROUTER_OPTIONS)
    ns = vars(parser.parse_args(["--kv-overlap-score-weight", "2.5", "--no-router-kv-events",
                                 "--router-temperature", "0.5"]))
    s = resolve(ROUTER_OPTIONS, ns, env={})
    assert (s.router_kv_overlap_score_weight, s.router_kv_events, s.router_temperature) == (2.5, False, 0.5)

    with pytest.raises(ConfigError, match="DYN_ROUTER_MODE"):
        resolve(ROUTER_OPTIONS, {}, env={"DYN_ROUTER_MODE": "fastest"})
