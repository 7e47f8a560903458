"""Bad /v1/responses requests: a clear 400 (404 for unknown ids) in OpenAI's envelope, nothing reaches the engine."""

from __future__ import annotations

import pytest

from dynamo_mono.engine import EngineError
from tests.media_samples import data_url, png, tiny_chatml_media_tokens
from tests.openai.conftest import Server, assert_envelope, reply
from tests.responses.conftest import MODEL, RESPONSES, WEATHER, request

pytestmark = pytest.mark.timeout(20)

CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
IMAGE = {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                                     {"type": "input_image", "image_url": data_url(png(56, 84))}]}

BAD: list[tuple[dict, str, str | None]] = [
    (request(""), "input must not be empty", "input"),
    (request([]), "input must not be empty", "input"),
    (request(5), "string or a list of input items", "input"),
    ({"model": MODEL}, "Missing required parameter: 'input'", "input"),
    (request([{"type": "web_search_call", "id": "ws_1"}]), "unsupported item type 'web_search_call'", "input"),
    (request([{"type": "item_reference", "id": "msg_1"}]), "unsupported item type 'item_reference'", "input"),
    (request(["hello"]), "input[0] must be an object", "input"),
    (request([{"role": "user", "content": "hi", "colour": "red"}]), "Unrecognized request argument", "input.0.colour"),
    (request([{"role": "tool", "content": "hi"}]), "role", "input.0.role"),
    (request([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
     "unsupported type 'input_file'", "input.0.content"),
    (request([{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]),
     "a 'user' message cannot contain 'output_text'", "input.0"),
    (request([{"role": "user", "content": "hi"},
              {"type": "function_call_output", "call_id": "call_9", "output": "x"}]),
     "no function_call with call_id 'call_9'", "input.1.call_id"),
    (request([{"role": "user", "content": "hi"}, CALL,
              {"type": "function_call_output", "call_id": "call_2", "output": "x"}]),
     "no function_call with call_id 'call_2'", "input.2.call_id"),
    (request([{"type": "reasoning", "summary": [], "encrypted_content": "abc"}, {"role": "user", "content": "hi"}]),
     "encrypted reasoning is not supported", "input.0.encrypted_content"),
    (request([{"role": "system", "content": "only a system message"}]), "no message to answer", "input"),
    (request(tools=[{"type": "web_search"}]), "tool type 'web_search' is not supported", "tools"),
    (request(tools=[WEATHER, WEATHER]), "function names must be unique", "tools.1.name"),
    (request(tool_choice="required"), "requires 'tools'", "tool_choice"),
    (request(tools=[WEATHER], tool_choice={"type": "function", "name": "nope"}), "'nope', which is not in tools",
     "tool_choice.name"),
    (request(tools=[WEATHER], tool_choice={"type": "web_search_preview"}), "tool_choice type", "tool_choice"),
    (request(tools=[WEATHER], tool_choice={"type": "function"}), "Missing required parameter", "tool_choice.name"),
    (request(tools=[WEATHER], tool_choice="sometimes"), "'none', 'auto' or 'required'", "tool_choice"),
    (request(tools=[WEATHER], tool_choice=3), "'none', 'auto', 'required' or an object", "tool_choice"),
    (request(tools=[WEATHER], tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [
        {"type": "function", "name": "nope"}]}), "'nope', which is not in tools", "tool_choice.tools.0.name"),
    (request(store=None, background=True, stream=True), "'background' with 'stream'", None),
    (request(include=["reasoning.encrypted_content"]), "'include'", None),
    (request(truncation="auto"), "truncation 'auto' is not supported", None),
    (request(service_tier="flex"), "service tiers other than", None),
    (request(prompt={"id": "pmpt_1"}), "prompt templates are not supported", None),
    (request(conversation="conv_1"), "conversations are not supported", None),
    (request(top_logprobs=3), "logprobs are not supported", None),
    (request(prompt_cache_key="k"), "prompt_cache_key is not supported", None),
    (request(reasoning={"effort": "high", "summary": "detailed"}), "reasoning summaries", "reasoning.summary"),
    (request(reasoning={"effort": "extreme"}), "Invalid value for 'reasoning.effort'", "reasoning.effort"),
    (request(text={"format": {"type": "json_schema", "schema": {}}}), "name", "text.format.name"),
    (request(text={"verbosity": "low"}), "verbosity 'low' is not supported", "text.verbosity"),
    (request(background=True, stream=True), "'background' with 'stream' is not supported", None),
    (request(background=True, store=False), "requires 'store': true", None),
    (request(max_output_tokens=0), "max_output_tokens", "max_output_tokens"),
    (request(temperature=3.0), "temperature", "temperature"),
    (request(metadata={f"k{i}": "v" for i in range(17)}), "at most 16", "metadata"),
    (request(stream_options={"include_obfuscation": True}), "obfuscation", "stream_options.include_obfuscation"),
    (request(stream_options={"include_usage": False}), "usage is always reported", "stream_options.include_usage"),
    (request(seed=1), "Unrecognized request argument supplied: seed", "seed"),
    (request(n=2), "Unrecognized request argument supplied: n", "n"),
]


@pytest.mark.parametrize("payload,needle,param", BAD, ids=[f"{i}-{b[1][:30]}" for i, b in enumerate(BAD)])
async def test_bad_requests(server: Server, payload: dict, needle: str, param: str | None) -> None:
    status, body = await server.post(RESPONSES, payload)
    assert status == 400, body
    err = assert_envelope(body, 400)
    assert needle in err["message"], err
    if param is not None:
        assert err["param"] == param, err
    assert server.engine.requests == []


async def test_image_input_refused_for_a_text_model(server: Server) -> None:
    status, body = await server.post(RESPONSES, request([IMAGE]))
    assert status == 400
    err = assert_envelope(body, 400)
    assert err["message"] == ("input.0.content.1: model 'tiny-chatml' does not accept image input; it accepts text")
    assert err["param"] == "input.0.content.1"
    status, body = await server.post(RESPONSES, request([{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-1"}]}]))
    assert status == 400 and "file ids are not supported" in body["error"]["message"]
    assert server.engine.requests == []


async def test_image_input_reaches_a_model_that_takes_images(server: Server) -> None:
    card = server.state.models[MODEL].pool.card()
    card.modalities = ["text", "image"]
    card.media_input = tiny_chatml_media_tokens(server.engine.tokenizer, "image")
    status, body = await server.post(RESPONSES, request([IMAGE]))
    assert status == 200, body
    req = server.engine.requests[0]
    [item] = req.media
    assert item.kind == "image" and item.data.shape == (84, 56, 3) and len(item.uuid) == 64
    # 56 x 84 pixels -> 2 x 3 merged patches of 28: six placeholder tokens where the template put one
    pad = card.media_input["image"].token_id
    assert req.token_ids[item.start:item.start + item.length] == [pad] * 6 and req.token_ids.count(pad) == 6
    assert body["usage"]["input_tokens"] == len(req.token_ids)


@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_previous_response_is_404(server: Server, stream: bool) -> None:
    r = await server.client.post(RESPONSES, json=request(previous_response_id="resp_nope", stream=stream))
    assert r.status == 404
    err = assert_envelope(await r.json(), 404)
    assert err["param"] == "previous_response_id" and "resp_nope" in err["message"]


async def test_unknown_model_is_404(server: Server) -> None:
    status, body = await server.post(RESPONSES, {**request(), "model": "nope"})
    assert status == 404 and body["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("query,needle", [("stream=true", "stream=true"), ("starting_after=3", "starting_after"),
                                          ("include[]=x", "include")])
async def test_get_query_refusals(server: Server, query: str, needle: str) -> None:
    _, body = await server.post(RESPONSES, request())
    r = await server.client.get(f"{RESPONSES}/{body['id']}?{query}")
    assert r.status == 400 and needle in assert_envelope(await r.json(), 400)["message"]
    assert (await server.client.get(f"{RESPONSES}/{body['id']}?stream=false")).status == 200


@pytest.mark.parametrize("path,method", [("/v1/responses/resp_x", "get"), ("/v1/responses/resp_x", "delete")])
async def test_unknown_id_is_404(server: Server, path: str, method: str) -> None:
    r = await getattr(server.client, method)(path)
    assert r.status == 404 and assert_envelope(await r.json(), 404)["code"] == "response_not_found"


async def test_engine_failure_in_a_unary_request_is_503_and_stored_failed(server: Server) -> None:
    server.script(reply("Hello", then=EngineError("worker 3 died")))
    r = await server.client.post(RESPONSES, json=request())
    assert r.status == 503 and "worker 3 died" in assert_envelope(await r.json(), 503)["message"]


async def test_malformed_body(server: Server) -> None:
    r = await server.client.post(RESPONSES, data=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status == 400 and assert_envelope(await r.json(), 400)["code"] == "invalid_json"

