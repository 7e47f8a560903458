"""Disaggregated prefill / decode with real vLLM instances exchanging KV over NIXL (vLLM's NixlConnector, host memory).

One server holds a decode instance (in-process) and a `dynamo-mono worker` process holds the prefill instance:
greedy output is token-for-token the aggregated one, the KV moves (metrics), and killing the prefill worker while
it holds a request still gives the client a complete answer (local prefill on the decode instance, counted).
An engine-level test covers a prefill instance that dies after the hand-off: the decode instance's NIXL read fails
and vLLM recomputes the prompt (kv_load_failure_policy "recompute"), same tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import threading
import time
import urllib.request

import pytest

from tests.vllm.conftest import BLOCK_SIZE, ENGINE_FLAGS, VLLM_ENV

HAVE_NIXL = importlib.util.find_spec("nixl") is not None
pytestmark = [pytest.mark.vllm, pytest.mark.nixl, pytest.mark.timeout(300),
              pytest.mark.skipif(not HAVE_NIXL, reason="NIXL is not installed: pip install nixl-cu12==1.5.1 && "
                                 "pip install --no-deps nixl==1.5.1")]

DISAGG_ENV = {**VLLM_ENV, "NIXL_LOG_LEVEL": "WARN"}


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of one family's samples whose labels include `labels`."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M):
        lbl = m.group(1) or ""
        if all(f'{k}="{v}"' in lbl for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _wait_until(cond, what: str, guard_s: float = 120.0):
    """Poll a state until it holds; the deadline only guards against a hang (never decides an outcome)."""
    deadline = time.monotonic() + guard_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _prompt(seed: int) -> str:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    return " ".join(words[(seed * 7 + i * 3) % len(words)] + str(i % (seed + 3)) for i in range(70))


def _complete(url: str, prompt: str, pin: int | None = None, max_tokens: int = 16) -> dict:
    from tests.worker.harness import post_json

    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    if pin is not None:
        body["nvext"] = {"backend_instance_id": pin}
    status, resp = post_json(url + "/v1/completions", body, timeout=120)
    assert status == 200, resp
    return resp


def test_vllm_transfer_params_round_trip_typed_and_over_the_worker_link():
    from dynamo_mono.engine import EngineOutput
    from dynamo_mono.transports import messages as m
    from dynamo_mono_vllm.disagg import transfer_from_vllm, transfer_to_vllm

    vllm_params = {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [[1, 2, 3, 4]],
                   "remote_engine_id": "e1", "remote_request_id": "r#0-abc", "remote_host": "10.0.0.2",
                   "remote_port": 5601, "tp_size": 1, "dcp_size": 1, "pp_size": 1, "remote_num_tokens": 100,
                   "remote_blocks_expiry_time": None, "transfer_mode": "pull", "remote_prefill_cached_tokens": 32}
    t = transfer_from_vllm(vllm_params)
    assert (t.endpoint.transport, t.endpoint.host, t.endpoint.port, t.num_blocks, t.num_tokens) == (
        "vllm-nixl", "10.0.0.2", 5601, 4, 100)
    assert t.first_token_on_decode and t.cached_tokens == 32
    back = transfer_to_vllm(t)
    assert {k: back[k] for k in back} == {k: vllm_params[k] for k in back}
    out = m.engine_output(m.decode(m.encode(m.output_message(3, EngineOutput([5], finish_reason="length",
                                                                             kv_transfer=t)))))
    assert out.kv_transfer == t
    from dynamo_mono.engine import EngineRequest, SamplingParams, StopConditions

    req = EngineRequest("r", [1, 2], SamplingParams(), StopConditions(max_tokens=4), kv_transfer=t)
    assert m.decode(m.encode(m.Generate(1, 0, req))).request.kv_transfer == t  # to a decode worker
    assert transfer_from_vllm(None) is None and transfer_from_vllm({"do_remote_decode": True}) is None


def test_roles_are_refused_where_they_cannot_work(tiny_model):
    from dynamo_mono.config import ConfigError
    from dynamo_mono.engine import EngineArgs
    from dynamo_mono_vllm.engine_args import build_engine_args

    m = str(tiny_model)
    ea = build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {"disaggregation_mode": "decode",
                                                                  "kv_lease_duration": 12}))
    kvt = ea.kv_transfer_config
    assert (kvt.kv_connector, kvt.kv_role, kvt.kv_buffer_device, kvt.kv_load_failure_policy) == (
        "NixlConnector", "kv_both", "cpu", "recompute")
    assert kvt.kv_connector_extra_config == {"kv_lease_duration": 12}
    assert build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {"disaggregation_mode": "agg"})
                             ).kv_transfer_config is None
    with pytest.raises(ConfigError, match="only chat models"):
        build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {"disaggregation_mode": "prefill"}, kind="embedding"))
    with pytest.raises(ConfigError, match="give one or the other"):
        build_engine_args(EngineArgs(m, "m", 0, 512, [2], 100, {"disaggregation_mode": "prefill"},
                                     extra_args=["--kv-transfer-config",
                                                 '{"kv_connector": "NixlConnector", "kv_role": "kv_both"}']))


@pytest.mark.timeout(240)
def test_decode_recomputes_when_prefill_dies_after_handoff(tiny_model):
    """The hand-off happened (transfer params in the server's hands), then the prefill instance died: the decode
    instance's NIXL read fails, vLLM frees the blocks it allocated for it and recomputes the prompt."""
    from dynamo_mono.engine import EngineArgs, EngineRequest, SamplingParams, StopConditions
    from dynamo_mono_vllm.engine import VllmEngine

    os.environ.update(DISAGG_ENV)

    def engine(mode: str, i: int) -> VllmEngine:
        opts = {"dtype": "float32", "enforce_eager": True, "block_size": BLOCK_SIZE, "num_gpu_blocks_override": 32,
                "disaggregation_mode": mode, "kv_transfer_host": "127.0.0.1", "kv_transfer_port": 0,
                "kv_lease_duration": 30}
        return VllmEngine(EngineArgs(str(tiny_model), "tiny", i, 512, [2], 100, opts))

    def req(rid: str, toks: list[int], n: int, **kw) -> EngineRequest:
        return EngineRequest(rid, toks, SamplingParams(temperature=0), StopConditions(max_tokens=n, ignore_eos=True),
                             **kw)

    async def run(e: VllmEngine, r: EngineRequest):
        toks, last = [], None
        async for o in e.generate(r):
            toks += o.token_ids
            last = o
        return toks, last

    async def scenario():
        prefill, decode = engine("prefill", 1), engine("decode", 2)
        await prefill.start()
        await decode.start()
        try:
            assert decode.model_card().disaggregation_mode == "decode"
            prompt = list(range(300, 400))
            _, p1 = await run(prefill, req("p1", prompt, 1, kv_export_key="k1"))
            t1 = p1.kv_transfer
            assert t1 is not None and t1.first_token_on_decode and t1.num_tokens == 100 and t1.num_blocks == 4
            await prefill.stop()  # dies after the hand-off
            toks, last = await run(decode, req("d1", prompt, 12, kv_transfer=t1))
            ref, _ = await run(decode, req("ref", prompt, 12))  # aggregated, on the same instance
            assert toks == ref and last.finish_reason == "length"
            _wait_until(lambda: decode.load_metrics()[0].kv_transfer_failures >= 1, "the failed read to be counted",
                        guard_s=60)
            assert decode.load_metrics()[0].kv_transfer_bytes == 0
        finally:
            await prefill.stop()
            await decode.stop()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def disagg_server(tiny_model):
    """A server with a local vLLM decode instance and a vLLM prefill worker process."""
    from tests.worker.harness import TOKEN, get_json, start_server, start_worker

    os.environ.update(DISAGG_ENV)  # the server inherits os.environ (the session fixture set the vLLM vars)
    flags = [*ENGINE_FLAGS[:-2], "--model", str(tiny_model), "--served-model-name", "tiny"]
    srv = start_server([*flags, "--num-instances", "1", "--disaggregation-mode", "decode", "--router-mode", "kv",
                        "--migration-limit", "1",
                        "--router-conditional-disagg", "--disagg-min-prefill-tokens", "64",
                        # a stopped worker is found dead by its closed connection, not by missed heartbeats
                        "--heartbeat-misses", "100000"], token=TOKEN, timeout=240)
    worker = start_worker(srv.url, [*flags, "--disaggregation-mode", "prefill"], name="prefill")

    def joined():
        _, body = get_json(srv.url + "/health")
        insts = (body or {}).get("instances", [])
        return insts if len(insts) == 2 and all(i["state"] == "ready" for i in insts) else None

    try:
        insts = _wait_until(joined, "the prefill worker to join", guard_s=240)
    except AssertionError:
        worker.stop(signal.SIGKILL)
        srv.stop(timeout=30)
        raise AssertionError(f"prefill worker did not join:\n{worker.log()[-4000:]}")
    yield srv, worker, {i["disaggregation_mode"]: i["worker_id"] for i in insts}
    _kill_tree(worker)
    srv.stop(timeout=30)


def _kill_tree(proc) -> None:
    """SIGKILL a worker and the EngineCore process it started."""
    import psutil

    try:
        kids = psutil.Process(proc.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    proc.stop(signal.SIGKILL)
    for k in kids:
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass


def test_disaggregated_greedy_output_matches_aggregated(disagg_server):
    srv, _, roles = disagg_server
    assert set(roles) == {"prefill", "decode"}
    before = _metrics(srv.url)
    for seed in range(2):
        prompt = _prompt(seed)
        dis = _complete(srv.url, prompt)  # first: the decode instance has nothing of it cached, pulls it all
        # Pinned to the decode instance: no prefill instance takes part (aggregated serving of the prompt).
        agg = _complete(srv.url, prompt, pin=roles["decode"])
        assert dis["choices"][0]["text"] == agg["choices"][0]["text"], (agg, dis)
        assert agg["usage"]["completion_tokens"] == dis["usage"]["completion_tokens"] == 16
    after = _wait_until(lambda: (lambda t: t if _value(t, "dynamo_kv_transfer_bytes_total",
                                                       worker_id=str(roles["decode"])) > 0 else None)(
        _metrics(srv.url)), "the decode instance to report KV bytes moved")
    remote = _value(after, "dynamo_frontend_disagg_remote_prefills_total") - _value(
        before, "dynamo_frontend_disagg_remote_prefills_total")
    assert remote == 2
    assert _value(after, "dynamo_frontend_disagg_local_prefill_fallbacks_total") == 0
    # Both roles publish KV events: the router indexed the prompts' blocks on each instance.
    for wid in roles.values():
        assert _value(after, "dynamo_component_router_kv_indexed_blocks", worker_id=str(wid)) > 0
    # 70+ word prompts span several 32-token blocks of 2 layers x K/V x 128 floats: at least one full block moved.
    block_bytes = BLOCK_SIZE * 2 * 2 * 128 * 4
    assert _value(after, "dynamo_kv_transfer_bytes_total", worker_id=str(roles["decode"])) >= block_bytes


def test_conditional_disaggregation_prefills_short_or_cached_prompts_on_decode(disagg_server):
    srv, _, roles = disagg_server
    remote = _value(_metrics(srv.url), "dynamo_frontend_disagg_remote_prefills_total")
    short = _complete(srv.url, "alpha bravo charlie")  # under --disagg-min-prefill-tokens 64
    assert short["choices"][0]["text"] == _complete(srv.url, "alpha bravo charlie", pin=roles["decode"])[
        "choices"][0]["text"]
    prompt = _prompt(9)
    _complete(srv.url, prompt, pin=roles["decode"])  # the decode instance now holds the prompt's blocks
    _wait_until(lambda: _value(_metrics(srv.url), "dynamo_component_router_kv_indexed_blocks",
                               worker_id=str(roles["decode"])) > 0, "the decode instance's blocks indexed")
    _complete(srv.url, prompt)  # uncached tail under 64 tokens: stays on the decode instance
    assert _value(_metrics(srv.url), "dynamo_frontend_disagg_remote_prefills_total") == remote


def test_prefill_worker_killed_mid_handoff_client_gets_complete_answer(disagg_server):
    srv, worker, roles = disagg_server
    prompt = _prompt(5)
    pid = str(roles["prefill"])
    routed = _value(_metrics(srv.url), "dynamo_component_router_requests_total", worker_id=pid)
    os.kill(worker.proc.pid, signal.SIGSTOP)  # the prefill worker takes the request and never answers
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(_complete(srv.url, prompt + " ")))
    t.start()
    _wait_until(lambda: _value(_metrics(srv.url), "dynamo_component_router_requests_total", worker_id=pid) > routed,
                "the request to reach the prefill worker")
    _kill_tree(worker)  # mid-hand-off: the server holds the request at the prefill worker
    t.join(timeout=180)
    assert not t.is_alive()
    assert result["usage"]["completion_tokens"] == 16
    again = _complete(srv.url, prompt + " ", pin=roles["decode"])["choices"][0]["text"]
    assert result["choices"][0]["text"] == again
    text = _metrics(srv.url)
    assert _value(text, "dynamo_frontend_disagg_local_prefill_fallbacks_total", reason="error") == 1
