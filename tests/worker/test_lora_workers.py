"""LoRA on remote workers: adapter files travel over the worker link; a worker that joins later gets the adapters
placed on it, and one that leaves hands them to the others."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from tests.lora.adapters import make_adapter
from tests.worker.harness import get_json, post_json, remote_instances, start_server, start_worker, wait_until

pytestmark = pytest.mark.timeout(90)

MODEL = "tiny-chatml"
FAST = ["--speedup-ratio", "0"]


def _placed(url: str) -> list[int]:
    _, body = get_json(url + "/v1/loras")
    return body["instances"].get("a1", [])


def test_adapter_follows_workers(tmp_path) -> None:
    path = make_adapter(str(tmp_path), "a1")
    server = start_server(["--num-instances", "0", "--lora-sample-interval", "0.05", "--migration-limit", "2"])
    workers = [start_worker(server.url, FAST, name="w0")]
    try:
        wait_until(lambda: len(remote_instances(server.url)) == 1, 30, "the first worker to join")
        status, body = post_json(server.url + "/v1/loras", {"lora_name": "a1", "source": {"uri": path}})
        assert status == 200, body
        first = remote_instances(server.url)[0]["worker_id"]
        assert _placed(server.url) == [first]
        workers.append(start_worker(server.url, FAST, name="w1"))
        wait_until(lambda: len(_placed(server.url)) == 2, 30, "the adapter to be placed on the joining worker")
        for i in range(4):
            status, body = post_json(server.url + "/v1/completions",
                                     {"model": "a1", "prompt": f"hello {i}", "max_tokens": 2})
            assert status == 200 and body["model"] == "a1", body
        workers[0].stop(signal.SIGKILL)
        wait_until(lambda: len(_placed(server.url)) == 1 and _placed(server.url) != [first], 30,
                   "the adapter to stay on the remaining worker only")
        status, body = post_json(server.url + "/v1/chat/completions",
                                 {"model": "a1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert status == 200, body
        req = urllib.request.Request(server.url + "/v1/loras/a1", method="DELETE")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
        assert _placed(server.url) == []
    finally:
        for w in workers:
            w.stop()
        server.stop()
