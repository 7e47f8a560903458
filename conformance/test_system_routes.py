"""Health, readiness, metrics and the OpenAPI document of a running server."""

from __future__ import annotations

import aiohttp
import openai
import pytest

pytestmark = pytest.mark.timeout(60)


async def _get(url: str) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.text(), dict(r.headers)


async def test_ready_live_health(base_url: str, model_name: str) -> None:
    status, _, _ = await _get(base_url + "/ready")
    assert status == 200
    status, _, _ = await _get(base_url + "/live")
    assert status == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(base_url + "/health") as r:
            body = await r.json()
    assert r.status == 200 and body["status"] == "healthy"
    assert [m["name"] for m in body["models"]] == [model_name]
    model = body["models"][0]
    assert model["kind"] == "chat" and model["configured"] and model["ready_instances"] == model["instances"] != []
    assert body["instances"] and body["instances"][0]["state"] == "ready"


async def test_metrics_count_requests(base_url: str, model_name: str) -> None:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=5, stream=True)
    async for _ in stream:
        pass
    status, text, headers = await _get(base_url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    lines = [l for l in text.splitlines() if l.startswith("dynamo_frontend_requests_total{")]
    assert any('endpoint="chat_completions"' in l and 'request_type="stream"' in l and 'status="success"' in l
               and float(l.rsplit(" ", 1)[1]) >= 1 for l in lines), lines
    for family in ("dynamo_frontend_inflight_requests", "dynamo_frontend_queued_requests",
                   "dynamo_frontend_time_to_first_token_seconds_bucket", "dynamo_frontend_inter_token_latency_seconds",
                   "dynamo_frontend_request_duration_seconds", "dynamo_frontend_input_sequence_tokens",
                   "dynamo_frontend_output_sequence_tokens", "dynamo_frontend_disconnected_clients",
                   "dynamo_frontend_model_context_length", "dynamo_frontend_model_kv_cache_block_size"):
        assert family in text, family


async def test_request_id_echoed(base_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base_url + "/v1/models", headers={"x-request-id": "abc-123"}) as r:
            assert r.headers["x-request-id"] == "abc-123"


async def test_openapi_document(base_url: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base_url + "/openapi.json") as r:
            doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/chat/completions" in doc["paths"] and "/v1/completions" in doc["paths"]
    schemas = doc["components"]["schemas"]
    assert "messages" in schemas["ChatCompletionRequest"]["properties"]
    assert "ChatCompletionResponse" in schemas and "ErrorResponse" in schemas
