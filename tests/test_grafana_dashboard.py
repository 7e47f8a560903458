"""docs/deploy/grafana/dynamo-mono.json: every metric a panel queries is one the server exports (names collected from
an in-process server's registry; planner names from the planner module's metric definitions, when it exists)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.plugins import get_plugins
from dynamo_mono.server import build_state, stop_engines

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docs" / "deploy" / "grafana" / "dynamo-mono.json"
METRIC = re.compile(r"\b((?:dynamo|kvbm)_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("_sum", "_count", ""), "untyped": ("",), "info": ("_info",)}


def _panels() -> list[dict]:
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for p in doc["panels"]:
        out.extend([p, *p.get("panels", [])])
    return [p for p in out if p.get("type") != "row"]


def _queried(panels: list[dict]) -> dict[str, list[str]]:
    """metric name -> titles of the panels that query it."""
    names: dict[str, list[str]] = {}
    for p in panels:
        for t in p.get("targets", []):
            for name in METRIC.findall(t["expr"]):
                names.setdefault(name, []).append(p["title"])
    return names


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Sample names each family of the registry exposes (also families that have no series yet)."""
    names = set()
    for fam in registry.collect():
        names.update(fam.name + s for s in SUFFIXES.get(fam.type, ("",)))
    return names


def planner_names() -> set[str]:
    """dynamo_planner_* names defined in the planner package's source (its metric definitions)."""
    spec = importlib.util.find_spec("dynamo_mono.planner")
    assert spec is not None
    roots = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    names = set()
    for root in roots:
        for py in Path(root).rglob("*.py"):
            names.update(re.findall(r"[\"'](dynamo_planner_[a-z0-9_]+)[\"']", py.read_text(encoding="utf-8")))
    return names


@pytest.fixture
async def server_names() -> set[str]:
    settings = resolve(serve_options(get_plugins()), {"router_mode": "kv", "speedup_ratio": 0.0}, env={})
    state = await build_state(settings, get_plugins())  # the server's models, engines, router and registry
    try:
        return exported_names(state.metrics.registry)
    finally:
        await stop_engines(state)


def test_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Frontend", "Router", "Engines and KV cache", "LoRA adapters", "Media", "Planner"]
    for p in _panels():
        assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    assert (ROOT / "docs" / "deploy" / "prometheus.yml").read_text().count("metrics_path: /metrics") == 1


async def test_every_queried_metric_is_exported(server_names: set[str]) -> None:
    queried = _queried(_panels())
    missing = {n: t for n, t in queried.items() if not n.startswith("dynamo_planner_") and n not in server_names}
    assert not missing, f"panels query metrics the server does not export: {missing}"
    assert len([n for n in queried if not n.startswith("dynamo_planner_")]) > 40


def test_planner_panels_query_planner_metrics() -> None:
    queried = {n for n in _queried(_panels()) if n.startswith("dynamo_planner_")}
    assert queried == {"dynamo_planner_instances", "dynamo_planner_target_instances",
                       "dynamo_planner_predicted_requests", "dynamo_planner_predicted_isl",
                       "dynamo_planner_predicted_osl", "dynamo_planner_observed_ttft_ms",
                       "dynamo_planner_observed_itl_ms"}
    if importlib.util.find_spec("dynamo_mono.planner") is None:
        pytest.skip("dynamo_mono.planner is not in this tree: the planner panels are checked once it is")
    missing = queried - planner_names()
    assert not missing, f"planner panels query metrics the planner does not define: {sorted(missing)}"
