"""LoRA adapters on a real server: load over HTTP, list and chat with the openai SDK, unload, 404 after; a restart
with --lora-modules serves the adapters again."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.lora.adapters import make_adapter

pytestmark = pytest.mark.timeout(90)


def _call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_sdk_round_trip(make_server, tmp_path) -> None:
    srv = make_server("--num-instances", "2")
    path = make_adapter(str(tmp_path), "sql-lora")
    status, body = _call("POST", srv.url + "/v1/loras", {"lora_name": "sql-lora", "source": {"uri": f"file://{path}"}})
    assert status == 200 and body["lora_name"] == "sql-lora", body
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    models = {m.id: m for m in client.models.list().data}
    base = next(n for n in models if n != "sql-lora")
    assert models["sql-lora"].model_extra["parent"] == base
    chat = client.chat.completions.create(model="sql-lora", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=4)
    assert chat.model == "sql-lora" and chat.choices[0].message.content
    chunks = list(client.chat.completions.create(model="sql-lora", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=4, stream=True))
    assert chunks and all(c.model == "sql-lora" for c in chunks)
    status, body = _call("DELETE", srv.url + "/v1/loras/sql-lora")
    assert status == 200, body
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="sql-lora", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert "sql-lora" not in {m.id for m in client.models.list().data}


def test_restart_with_lora_modules_restores(make_server, tmp_path) -> None:
    a, b = make_adapter(str(tmp_path), "a"), make_adapter(str(tmp_path), "b")
    for _ in range(2):  # a server, then its restart with the same flags
        srv = make_server("--lora-modules", f"a={a},b=file://{b}")
        status, body = _call("GET", srv.url + "/v1/loras")
        assert status == 200 and sorted(body["loras"]) == ["a", "b"], body
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        out = client.completions.create(model="b", prompt="hello", max_tokens=2)
        assert out.model == "b"
        srv.stop()


def test_bad_lora_modules_fail_startup(make_server, tmp_path) -> None:
    with pytest.raises(Exception, match="no adapter_config.json"):
        make_server("--lora-modules", f"x={tmp_path}")
