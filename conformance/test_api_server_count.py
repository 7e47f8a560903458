"""`--api-server-count 2`: a representative part of the conformance suite against two HTTP processes around one
core (the whole suite runs that way with DYN_API_SERVER_COUNT=2), and what only several processes can show:
one /metrics over all of them, and the death of an HTTP process (its streams aborted in the engine, nothing
leaked, the process restarted)."""

from __future__ import annotations

import asyncio
import os
from typing import Iterator

import aiohttp
import pytest

from conformance.server import ServerProcess, metric_value, start_server
from conformance.test_admission import test_queue_full_is_429_with_retry_after  # noqa: F401
from conformance.test_admission import test_urgent_requests_overtake_a_full_queue  # noqa: F401
from conformance.test_anthropic_sdk import test_async_create_and_stream  # noqa: F401
from conformance.test_disconnect import test_disconnect_aborts_and_frees  # noqa: F401
from conformance.test_lifecycle import test_sigterm_drains_inflight_stream_and_refuses_new_work  # noqa: F401
from conformance.test_migration import test_failed_instance_migrates_with_identical_text  # noqa: F401
from conformance.test_openai_sdk import aclient, client  # noqa: F401  (fixtures of the imported tests)
from conformance.test_openai_sdk import (test_async_streaming, test_chat_non_streaming,  # noqa: F401
                                         test_chat_streaming_matches_unary, test_completions_forms,
                                         test_errors_are_typed, test_n_choices, test_stop_string_never_in_output)
from conformance.test_system_routes import test_metrics_count_requests, test_ready_live_health  # noqa: F401
from conformance.waits import metrics_text, wait_for_metric, wait_idle, wait_until

pytestmark = pytest.mark.timeout(90)

COUNT = ["--api-server-count", "2"]


@pytest.fixture(scope="module")
def engine_args(pytestconfig: pytest.Config) -> list[str]:
    import shlex

    engine = pytestconfig.getoption("--engine")
    fast = ["--speedup-ratio", "0"] if engine == "mocker" else []
    return ["--engine", engine, *fast, *shlex.split(pytestconfig.getoption("--server-args")), *COUNT]


@pytest.fixture(scope="module")
def server(engine_args: list[str]) -> Iterator[ServerProcess]:
    srv = start_server(engine_args)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def model_name(server: ServerProcess) -> str:
    return "tiny-chatml"


def http_processes(srv: ServerProcess) -> list[int]:
    """The pids of the core's HTTP processes (its children)."""
    pid = srv.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _sockets(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_two_http_processes_serve_the_port(server: ServerProcess) -> None:
    assert len(http_processes(server)) == 2


async def test_metrics_add_up_over_processes(make_server) -> None:
    srv = make_server()
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    for _ in range(12):  # a connection each: the kernel spreads them over both processes
        async with aiohttp.ClientSession() as s:
            async with s.post(srv.url + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
    text = await metrics_text(srv.url)
    assert metric_value(text, "dynamo_frontend_requests_total", {"status": "success"}) == 12
    assert metric_value(text, "dynamo_frontend_output_tokens_total") == 36
    assert metric_value(text, "dynamo_component_router_requests_total") == 12
    assert text.count("# TYPE dynamo_frontend_requests_total counter") == 1


async def test_http_process_death_aborts_its_streams_and_restarts(make_server) -> None:
    # 4000 decode steps of 80 ms: no stream can end by itself within the test's hang guards.
    srv = make_server("--speedup-ratio", "0.1")
    body = {"model": "tiny-chatml", "messages": [{"role": "user", "content": "story"}], "max_tokens": 4000,
            "ignore_eos": True, "stream": True}
    k = 8
    sessions = [aiohttp.ClientSession() for _ in range(k)]  # one connection each
    ended: list[int] = []

    async def read(i: int, resp: aiohttp.ClientResponse) -> None:
        try:
            while await resp.content.readline():
                pass
        except (aiohttp.ClientError, ConnectionError):
            pass
        ended.append(i)

    try:
        readers = []
        for i, s in enumerate(sessions):
            resp = await s.post(srv.url + "/v1/chat/completions", json=body)
            assert resp.status == 200
            await resp.content.readline()
            readers.append(asyncio.create_task(read(i, resp)))
        await wait_for_metric(srv.url, "dynamo_engine_running_requests", lambda v: v == k)
        before = http_processes(srv)
        victim = max(before, key=_sockets)  # the one holding most of the client connections (at least k / 2)
        os.kill(victim, 9)
        # Its streams end for their clients, and the core aborted them in the engine: the engine runs exactly the
        # streams of the surviving process.
        await wait_until(lambda: ended, "a stream of the killed process to end")

        async def settled() -> bool:
            running = metric_value(await metrics_text(srv.url), "dynamo_engine_running_requests")
            return running == k - len(ended)
        await wait_until(settled, "the engine to run only the survivors' streams")
        await wait_until(lambda: len(http_processes(srv)) == 2 and victim not in http_processes(srv),
                         "the killed HTTP process to be replaced")
        assert "exited with code -9; restarting it" in srv.log()
        await wait_for_metric(srv.url, "dynamo_frontend_api_servers", lambda v: v == 2)  # the new one listens
        assert metric_value(await metrics_text(srv.url), "dynamo_frontend_api_server_restarts_total") == 1
    finally:
        for s in sessions:
            await s.close()
    text = await wait_idle(srv.url)  # the survivors' clients went away too: nothing is left anywhere
    assert metric_value(text, "dynamo_engine_kv_active_blocks") == 0
    for _ in range(4):  # and both processes serve (a connection each: whichever one accepts)
        async with aiohttp.ClientSession() as s:
            async with s.post(srv.url + "/v1/chat/completions", json={**body, "max_tokens": 2, "stream": False}) as r:
                assert r.status == 200


def test_forwarded_routes_keep_the_clients_scheme_and_host(tmp_path) -> None:
    """A stored image's URL, made by the core for a request an HTTP process forwarded, names the client's https
    address (scheme and host), and the image is fetchable there."""
    import json
    import ssl
    import urllib.request

    from tests.test_tls import make_self_signed

    cert, key = make_self_signed(tmp_path)
    cfg = tmp_path / "models.yaml"
    cfg.write_text("- {name: painter, engine: mocker, kind: image, options: {speedup_ratio: 0, max_image_size: 512}}\n")
    srv = start_server(["--config", str(cfg), "--tls-cert-path", cert, "--tls-key-path", key, *COUNT], ca_file=cert)
    try:
        ctx = ssl.create_default_context(cafile=cert)
        body = {"model": "painter", "prompt": "a kite", "size": "64x64", "nvext": {"num_inference_steps": 1}}
        req = urllib.request.Request(srv.url + "/v1/images/generations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            url = json.loads(r.read())["data"][0]["url"]
        assert url.startswith(srv.url + "/"), url
        with urllib.request.urlopen(url, context=ctx, timeout=30) as r:
            assert r.headers["Content-Type"] == "image/png"
    finally:
        srv.stop()
