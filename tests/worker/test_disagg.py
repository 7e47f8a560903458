"""Disaggregated prefill → decode between worker processes (tcp and nixl) gives the aggregated tokens."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import signal

import pytest

from dynamo_mono.cli import serve_options
from dynamo_mono.config import resolve
from dynamo_mono.engine import EngineArgs, EngineRequest, SamplingParams, StopConditions
from dynamo_mono.plugins import get_plugins
from dynamo_mono.serving.pool import Instance
from mocker.engine import MockerEngine
from tests.worker.harness import post_json, remote_instances, start_server, start_worker, wait_until

MODEL = "tiny-chatml"
HAS_NIXL = importlib.util.find_spec("nixl") is not None and importlib.util.find_spec("dynamo_mono_nixl") is not None

TRANSPORTS = [
    "tcp",
    pytest.param("nixl", marks=[pytest.mark.nixl,
                                pytest.mark.skipif(not HAS_NIXL, reason="nixl (or dynamo-mono-nixl) not installed")]),
]


def _bodies() -> list[dict]:
    # 300+ token prompts: several 64-token blocks to move; seeds make the outputs comparable across runs.
    return [{"model": MODEL, "prompt": f"prompt {i} " + "lorem ipsum dolor sit amet " * 60, "max_tokens": 24,
             "seed": 7 + i, "ignore_eos": True} for i in range(3)]


def _engine_hit_rate(url: str, worker_id: int) -> float:
    with __import__("urllib.request").request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    pat = re.compile(r'^dynamo_\w*hit_rate\{[^}]*worker_id="%d"[^}]*\} ([0-9.e+-]+)$' % worker_id, re.M)
    found = pat.findall(text)
    return max(map(float, found)) if found else 0.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_disaggregated_workers_match_aggregated_tokens(transport):
    common = ["--speedup-ratio", "0", "--kv-bytes-per-block", "65536"]
    agg = start_server(["--num-instances", "1", *common], token=None)
    server = start_server(["--num-instances", "0"])
    prefill = start_worker(server.url, [*common, "--disaggregation-mode", "prefill", "--kv-transport", transport],
                           name="prefill")
    decode = start_worker(server.url, [*common, "--disaggregation-mode", "decode", "--kv-transport", transport],
                          name="decode")
    try:
        insts = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(remote_instances(server.url)), 30,
                           "prefill and decode workers to join")
        expected = []
        for body in _bodies():
            status, resp = post_json(agg.url + "/v1/completions", body)
            assert status == 200, resp
            expected.append(resp["choices"][0]["text"])
        got = []
        for body in _bodies():
            status, resp = post_json(server.url + "/v1/completions", body)
            assert status == 200, resp
            got.append(resp["choices"][0]["text"])
        assert got == expected
        # The decode worker saw none of these prompts, so any prefix hit there came through the transfer.
        # (load reports arrive with the 0.5 s heartbeat)
        wait_until(lambda: max(_engine_hit_rate(server.url, i["worker_id"]) for i in insts) > 0.5, 30,
                   "the decode worker to report prefix hits on the pulled blocks")
        assert "prefilling locally" not in decode.log()
    finally:
        for p in (prefill, decode):
            p.stop(signal.SIGKILL)
        server.stop()
        agg.stop()


async def test_conditional_disagg_keeps_short_prompts_local():
    """In-process pool: a short prompt stays on the decode instance; a long one is prefilled remotely."""
    plugins = get_plugins()
    from dynamo_mono.server import build_state

    settings = resolve(serve_options(plugins), {"num_instances": 0, "speedup_ratio": 0.0,
                                                "router_conditional_disagg": True,
                                                "disagg_min_prefill_tokens": 200}, env={})
    state = await build_state(settings, plugins)
    model = state.models[MODEL]
    info = model.info

    def engine(i: int, mode: str) -> MockerEngine:
        return MockerEngine(EngineArgs(info.path, info.name, i, info.max_model_len, list(info.eos_token_ids),
                                       info.tokenizer.vocab_size, {"disaggregation_mode": mode, "speedup_ratio": 0.0,
                                                                   "kv_transport": "tcp"}, info.tokenizer))

    p, d = engine(0, "prefill"), engine(1, "decode")
    await asyncio.gather(p.start(), d.start())
    try:
        model.add_instance(Instance(0, p, p.model_card()))
        model.add_instance(Instance(1, d, d.model_card()))

        async def run(rid: str, n: int) -> list[int]:
            req = EngineRequest(rid, list(range(100, 100 + n)), SamplingParams(seed=3), StopConditions(max_tokens=8))
            return [t async for o in model.pool.generate(req) for t in o.token_ids]

        assert len(await run("short", 100)) == 8
        assert d.disagg.pulled_bytes == 0 and p.load_metrics()[0].prefix_hit_rate == 0.0
        assert len(await run("long", 400)) == 8
        assert d.disagg.pulled_bytes == (400 // 64) * 64 * 1024
    finally:
        await asyncio.gather(p.stop(), d.stop())
