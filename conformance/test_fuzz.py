"""Fuzzing every route with hypothesis and schemathesis: no 5xx, every 4xx in the route's envelope, no hang."""

from __future__ import annotations

import copy
import json
import urllib.parse
from typing import Any, Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.server import ServerProcess, start_server

pytestmark = pytest.mark.timeout(120)

MODEL = "tiny-chatml"
MSG = [{"role": "user", "content": "hello there"}]
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": MODEL, "messages": MSG, "max_tokens": 4, "temperature": 0.5, "n": 1,
                             "stop": ["zz"], "stream": False, "logprobs": False, "top_p": 0.9, "seed": 1,
                             "stream_options": {"include_usage": True},
                             "tools": [{"type": "function", "function": {
                                 "name": "f", "parameters": {"type": "object", "properties": {}}}}],
                             "tool_choice": "auto", "response_format": {"type": "text"},
                             "nvext": {"annotations": ["a"], "agent_hints": {"priority": 1}}},
    "/v1/completions": {"model": MODEL, "prompt": "once upon", "max_tokens": 4, "echo": False, "n": 1,
                        "logprobs": 1, "stop": "zz", "stream": False, "temperature": 1.0, "best_of": 1},
    "/v1/messages": {"model": MODEL, "max_tokens": 4, "messages": MSG, "system": "be brief", "stream": False,
                     "stop_sequences": ["zz"], "temperature": 0.5, "top_k": 5,
                     "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "auto"},
                     "metadata": {"user_id": "u"}, "thinking": {"type": "disabled"}},
    "/v1/messages/count_tokens": {"model": MODEL, "messages": MSG, "system": "be brief"},
}
GET_ROUTES = ["/health", "/live", "/ready", "/metrics", "/openapi.json", "/v1/models", f"/v1/models/{MODEL}"]
# A short generation limit keeps every valid fuzzed request fast; over it is a 400, which is fine here.
SERVER_FLAGS = ["--max-tokens-limit", "32", "--max-n", "4"]


@pytest.fixture(scope="module")
def fuzz_server(engine_args: list[str]) -> Iterator[ServerProcess]:
    srv = start_server([*engine_args, *SERVER_FLAGS])
    yield srv
    srv.stop()


class Client:
    """A requests session bound to one server, with a client timeout on every call (a hang fails the test)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, timeout=20, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)


@pytest.fixture(scope="module")
def client(fuzz_server: ServerProcess) -> Iterator[Client]:
    c = Client(fuzz_server.url)
    yield c
    c.session.close()


@pytest.fixture(scope="module")
def post_routes(client: Client) -> list[str]:
    """The POST routes this server has (the Anthropic ones may be switched off)."""
    return [p for p in VALID if client.post(p, data=b"{}", headers={"Content-Type": "application/json"})
            .status_code != 404 or not p.startswith("/v1/messages")]


# --- what a response must look like ------------------------------------------------------------------
def _is_anthropic(path: str) -> bool:
    return path.startswith("/v1/messages")


def check_response(path: str, resp: requests.Response, sent: bytes = b"") -> None:
    """No server error; a 4xx is the route's JSON envelope; a stream ends cleanly or with a client-facing error."""
    where = f"{resp.request.method} {path} -> {resp.status_code}: {resp.text[:300]!r}; sent {sent[:300]!r}"
    assert resp.status_code < 500, where
    text = resp.text
    for leak in ("Traceback", "site-packages", "dynamo_mono/", ".py\""):
        assert leak not in text, where
    if 400 <= resp.status_code < 500:
        body = resp.json()
        if _is_anthropic(path):
            assert body["type"] == "error" and isinstance(body["error"]["message"], str), where
            assert isinstance(body["error"]["type"], str), where
        else:
            err = body["error"]
            assert set(err) >= {"message", "type", "param", "code"}, where
            assert isinstance(err["message"], str) and err["message"], where
        return
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        events = [e for e in text.split("\n\n") if e.strip()]
        assert events, where
        if _is_anthropic(path):
            assert events[-1].startswith("event: message_stop") or events[-1].startswith("event: error"), where
            if events[-1].startswith("event: error"):
                assert '"api_error"' not in events[-1], where
        else:
            assert events[-1] == "data: [DONE]", where
            assert '"internal_error"' not in text, where


def post(client: Client, path: str, body: bytes, content_type: str = "application/json") -> None:
    resp = client.post(path, data=body, headers={"Content-Type": content_type})
    check_response(path, resp, body)


# --- strategies ------------------------------------------------------------------------------------
EXTREME_NUMBERS = st.sampled_from([0, -1, 1, 2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**30, 1e308,
                                   -1e308, 5e-324, 0.5, -0.0, 1.5, 2.000001, 99999999])
HUGE_STRINGS = st.sampled_from(["x" * 100_000, "\u2603" * 30_000, "<|im_start|>" * 500, "\x00" * 1000,
                                "{{ 7 * 7 }}{% for x in range(999999999) %}", "\ufeff\u202e", "𝕏" * 5000])
UNICODE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
JSON_LEAVES = st.none() | st.booleans() | st.integers() | EXTREME_NUMBERS | UNICODE | st.floats(
    allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(UNICODE, inner, max_size=4), max_leaves=12)
JUNK = JSON_VALUES | HUGE_STRINGS | st.just({"role": "user"}) | st.just([[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]])


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key / index path inside a body, so a mutation can land anywhere (nested too)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _same_type(value: Any) -> st.SearchStrategy:
    """Extreme values of the same JSON type as `value`."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, (int, float)):
        return EXTREME_NUMBERS | st.integers(-5, 70)
    if isinstance(value, str):
        return HUGE_STRINGS | UNICODE
    if isinstance(value, list):
        return st.just([]) | st.just(copy.deepcopy(value) * 40)
    return st.just({}) | st.just(copy.deepcopy(value))


@st.composite
def mutated_bodies(draw: st.DrawFn, path: str) -> bytes:
    """A valid body with one to three fields replaced by junk, deleted, or added."""
    body = copy.deepcopy(VALID[path])
    body["stream"] = draw(st.booleans()) if "stream" in body else None
    if body["stream"] is None:
        del body["stream"]
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        where = draw(st.sampled_from(paths)) if paths else ()
        action = draw(st.sampled_from(["replace", "same_type", "same_type", "delete", "add"]))
        parent = body
        for k in where[:-1]:
            parent = parent[k]
        if not where:
            break
        key = where[-1]
        if action == "same_type":  # keeps the body valid more often, so the junk reaches generation
            parent[key] = draw(_same_type(parent[key]))
        elif action == "replace":
            parent[key] = copy.deepcopy(draw(JUNK))  # st.just values are shared between examples
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(UNICODE)] = copy.deepcopy(draw(JUNK))
    # ensure_ascii=True can carry lone surrogates (\ud800) as escapes, which UTF-8 text cannot
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def raw_bodies(draw: st.DrawFn, path: str) -> tuple[bytes, str]:
    """Arbitrary JSON, truncated JSON, non-JSON bytes, with the right or a wrong content type."""
    kind = draw(st.sampled_from(["any_json", "truncated", "bytes", "content_type"]))
    ctype = "application/json"
    if kind == "any_json":
        raw = json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "truncated":
        full = json.dumps(VALID[path]).encode()
        raw = full[:draw(st.integers(0, len(full) - 1))]
    elif kind == "bytes":
        raw = draw(st.binary(max_size=200))
    else:
        raw = json.dumps(VALID[path]).encode()
        ctype = draw(st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                      "application/json; charset=latin-1", "application/xml", "", "*/*",
                                      "application/problem+json", "Application/JSON"]))
    return raw, ctype


FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


# --- tests -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", list(VALID))
def test_valid_bodies_succeed(client: Client, post_routes: list[str], path: str) -> None:
    if path not in post_routes:
        pytest.skip(f"{path} is not served")
    for stream in (False, True):
        body = {**VALID[path], "stream": stream} if "stream" in VALID[path] else VALID[path]
        resp = client.post(path, json=body)
        assert resp.status_code == 200, resp.text
        check_response(path, resp)


@pytest.mark.parametrize("path", list(VALID))
def test_fuzz_mutated_bodies(client: Client, post_routes: list[str], path: str) -> None:
    if path not in post_routes:
        pytest.skip(f"{path} is not served")

    @FUZZ
    @given(body=mutated_bodies(path))
    def run(body: bytes) -> None:
        post(client, path, body)

    run()


@pytest.mark.parametrize("path", list(VALID))
def test_fuzz_raw_bodies(client: Client, post_routes: list[str], path: str) -> None:
    if path not in post_routes:
        pytest.skip(f"{path} is not served")

    @FUZZ
    @given(case=raw_bodies(path))
    def run(case: tuple[bytes, str]) -> None:
        post(client, path, *case)

    run()


@pytest.mark.parametrize("path", list(VALID))
def test_oversized_and_deep_bodies(client: Client, post_routes: list[str], path: str) -> None:
    if path not in post_routes:
        pytest.skip(f"{path} is not served")
    deep = b'{"model": "tiny-chatml", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    over = b'{"model": "tiny-chatml", "prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    for body in (deep, over, b'{"model": "tiny-chatml", "max_tokens": 1e999}', b"\xef\xbb\xbf{}", b"{" * 50_000):
        post(client, path, body)


@pytest.mark.parametrize("path,field", [("/v1/chat/completions", "stop"), ("/v1/completions", "stop"),
                                        ("/v1/messages", "stop_sequences")])
def test_huge_stop_string_is_a_400(client: Client, post_routes: list[str], path: str, field: str) -> None:
    """A 100 KB stop string once took the matcher seconds and gigabytes per request; now it is refused."""
    if path not in post_routes:
        pytest.skip(f"{path} is not served")
    for stream in (False, True):
        resp = client.post(path, json={**VALID[path], field: ["x" * 100_000], "stream": stream})
        assert resp.status_code == 400, resp.text[:300]
        check_response(path, resp)
        assert "stop" in resp.text
    resp = client.post(path, json={**VALID[path], field: ["y" * 256]})
    assert resp.status_code == 200, resp.text[:300]


@FUZZ
@given(route=st.sampled_from(GET_ROUTES), query=st.dictionaries(UNICODE, UNICODE, max_size=3),
       headers=st.dictionaries(st.sampled_from(["x-request-id", "Accept", "Origin", "Authorization", "x-api-key"]),
                               st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)
                               .map(str.strip)))  # the client refuses to send edge whitespace
def test_fuzz_get_routes(client: Client, route: str, query: dict, headers: dict) -> None:
    resp = client.get(route, params=query, headers=headers)
    assert resp.status_code in (200, 503) if route in ("/health", "/ready") else resp.status_code == 200, route
    check_response(route, resp)


@FUZZ
@given(name=st.text(min_size=1, max_size=300),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]))
def test_fuzz_paths_and_methods(client: Client, name: str, method: str) -> None:
    quoted = urllib.parse.quote(name, safe="")
    for path in (f"/v1/models/{quoted}", f"/v1/{quoted}", f"/{quoted}"):
        resp = client.request(method, path)
        if method != "HEAD":
            check_response(path, resp)
        assert resp.status_code < 500


# --- schemathesis against the server's own OpenAPI document -----------------------------------------
schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess):
    # The coverage phase alone would send hundreds of requests per operation; the bounded fuzzing phase is enough.
    config = schemathesis.config.SchemathesisConfig.from_dict(
        {"phases": {"coverage": {"enabled": False}}, "generation": {"max-examples": 25}})
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_schemathesis_no_server_errors(case, fuzz_server: ServerProcess) -> None:
    from schemathesis.checks import not_a_server_error

    resp = case.call(base_url=fuzz_server.url, timeout=20)
    case.validate_response(resp, checks=[not_a_server_error])
