"""OpenAI Responses API routes: POST /v1/responses (JSON, SSE or background), GET / DELETE /v1/responses/{id},
POST /v1/responses/{id}/cancel.

A request is translated to a chat conversation (protocol.responses_api), runs through the chat pipeline and the
one request path (serve_generation, endpoint label "responses"), and its Steps become output items
(http.responses_output). Stored responses live in a bounded in-memory store (serving.responses_store).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from dynamo_mono.http.body import read_json
from dynamo_mono.http.generate import serve_generation
from dynamo_mono.http.middleware import json_response
from dynamo_mono.http.responses_output import OutputAssembler, new_id
from dynamo_mono.http.state import STATE, ServerState
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.protocol.responses_api import ChatForm, ResponsesRequest, dump_items, parse_request, to_chat
from dynamo_mono.serving.chat import ChatPipeline
from dynamo_mono.serving.choice import Step
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.media_input import check_parts
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.params import GenParams
from dynamo_mono.serving.responses_store import ResponsesStore, StoredResponse

STORE: web.AppKey[ResponsesStore] = web.AppKey("responses_store", ResponsesStore)
ENDPOINT = "responses"
# Chat-pipeline parameter names → the Responses field a client set.
_PARAMS = {"messages": "input", "max_tokens": "max_output_tokens"}


# --- request → generation ------------------------------------------------------------------------
def _echo(req: ResponsesRequest) -> dict[str, Any]:
    """The response object's fields that repeat the request."""
    tc = req.tool_choice
    return {
        "model": req.model, "instructions": req.instructions,
        "tools": [t.model_dump() for t in req.tools or ()],
        "tool_choice": "auto" if tc is None else tc if isinstance(tc, str) else tc.model_dump(),
        "parallel_tool_calls": req.parallel_tool_calls, "temperature": req.temperature, "top_p": req.top_p,
        "max_output_tokens": req.max_output_tokens, "max_tool_calls": None,
        "previous_response_id": req.previous_response_id,
        "reasoning": req.reasoning.model_dump(exclude={"generate_summary"}) if req.reasoning else None,
        "text": {"format": req.text.format.model_dump(by_alias=True) if req.text and req.text.format
                 else {"type": "text"}},
        "truncation": "disabled", "service_tier": "default", "store": req.store,
        "metadata": req.metadata or {}, "user": req.user, "safety_identifier": req.safety_identifier,
    }


def _gen_params(req: ResponsesRequest, chat: ChatForm) -> GenParams:
    return GenParams(max_tokens=req.max_output_tokens, temperature=req.temperature, top_p=req.top_p,
                     tools=None if chat.tool_choice == "none" else chat.tools, tool_choice=chat.tool_choice,
                     response_format=chat.response_format)


def _as_responses_error(exc: InvalidRequest) -> InvalidRequest:
    """A chat-pipeline refusal named in Responses terms (input, max_output_tokens)."""
    param = _PARAMS.get(exc.param or "")
    if param is None:
        return exc
    message = exc.message.replace("max_tokens", "max_output_tokens") if param == "max_output_tokens" else exc.message
    return type(exc)(message, param=param, code=exc.code)


async def _build(pipeline: ChatPipeline, model: ServedModel, chat: ChatForm, params: GenParams,
                 rid: str) -> Generation:
    try:
        prompt = await pipeline.prompt_for(model, chat.messages, tools=chat.tools, template_kwargs=chat.template_kwargs)
        return pipeline.generation(model, prompt, params, rid, template_kwargs=chat.template_kwargs)
    except InvalidRequest as exc:
        raise _as_responses_error(exc) from None


def _history(store: ResponsesStore, previous_id: str | None) -> list[dict]:
    if previous_id is None:
        return []
    prev = store.get(previous_id)
    if prev is None:
        raise ApiError(404, f"Previous response with id '{previous_id}' not found.", param="previous_response_id",
                       code="previous_response_not_found")
    if prev.status not in ("completed", "incomplete"):
        raise InvalidRequest(f"previous response '{previous_id}' is {prev.status}; only a completed or incomplete "
                             "response can be continued", param="previous_response_id")
    return prev.conversation()


# --- encoders ------------------------------------------------------------------------------------
def _usage(gen: Generation, out: OutputAssembler) -> dict:
    prompt, output = gen.prompt_tokens, gen.completion_tokens
    return {"input_tokens": prompt,
            # no explicit prompt-cache writes (prompt_cache_options is refused): prefix caching is automatic
            "input_tokens_details": {"cached_tokens": min(gen.cached_tokens, prompt), "cache_write_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": min(out.reasoning_tokens, output)},
            "total_tokens": prompt + output}


def _error_body(err: ApiError) -> dict:
    """A failed response's `error` (the codes the Responses API defines)."""
    code = "rate_limit_exceeded" if err.status == 429 else "invalid_prompt" if err.status < 500 else "server_error"
    return {"code": code, "message": err.message}


def _settle(store: ResponsesStore, rec: StoredResponse, out: OutputAssembler, gen: Generation) -> None:
    cut = gen.states[0].finish_reason == "length"
    out.finish("incomplete" if cut else "completed")
    store.finish(rec, "incomplete" if cut else "completed", usage=_usage(gen, out),
                 incomplete_details={"reason": "max_output_tokens"} if cut else None)


class ResponseUnary:
    """Collects steps into the response object (also what a background response runs with)."""

    __slots__ = ("store", "rec", "out")

    def __init__(self, store: ResponsesStore, rec: StoredResponse, out: OutputAssembler) -> None:
        self.store, self.rec, self.out = store, rec, out

    def open(self, gen: Generation) -> None:
        self.rec.status = "in_progress"

    def step(self, step: Step) -> None:
        self.out.add(step)

    def response(self, gen: Generation) -> web.Response:
        _settle(self.store, self.rec, self.out, gen)
        return json_response(self.rec.snapshot())


class ResponseStream:
    """Steps as Responses events: created, in_progress, the items' events, then completed / incomplete (or failed)."""

    __slots__ = ("store", "rec", "out")
    ping = None

    def __init__(self, store: ResponsesStore, rec: StoredResponse, out: OutputAssembler) -> None:
        self.store, self.rec, self.out = store, rec, out

    def open(self, gen: Generation) -> bytes:
        self.rec.status = "in_progress"
        snap = self.rec.snapshot()
        return (self.out.event("response.created", {"response": snap})
                + self.out.event("response.in_progress", {"response": snap}))

    def step(self, step: Step) -> bytes:
        return self.out.stream_step(step)

    def close(self, gen: Generation) -> bytes:
        _settle(self.store, self.rec, self.out, gen)
        name = "response.incomplete" if self.rec.status == "incomplete" else "response.completed"
        return self.out.take() + self.out.event(name, {"response": self.rec.snapshot()})

    def error(self, err: ApiError) -> bytes:
        self.out.take()  # events of items the failure cut short are not sent
        self.store.finish(self.rec, "failed", error=_error_body(err))
        return self.out.event("response.failed", {"response": self.rec.snapshot()})


# --- handlers ------------------------------------------------------------------------------------
async def create_response(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    store = request.app[STORE]
    req = parse_request(await read_json(request))
    model = state.model(req.model, kind="chat")
    items = dump_items(req)
    history = _history(store, req.previous_response_id)
    chat = to_chat(req, history, items)
    check_parts(model.pool.card(), model.name, chat.media, state.media_input.max_items)
    params = _gen_params(req, chat)
    pipeline = ChatPipeline(state)
    try:
        pipeline.check(params, len(chat.messages), model)
    except InvalidRequest as exc:
        raise _as_responses_error(exc) from None
    rid = new_id("resp_")
    # a response chained to this one continues from here (instructions are not carried over, as in OpenAI's API)
    rec = StoredResponse(rid, _echo(req), [*history, *items], background=req.background)
    out = OutputAssembler(stream=req.stream, single_tool_call=not req.parallel_tool_calls)
    rec.source = out
    if req.store:
        store.add(rec)
    if req.background:
        return await _start_background(request, state, store, model, rec, out,
                                       _build(pipeline, model, chat, params, rid))
    build = _build(pipeline, model, chat, params, rid)
    encoder = ResponseStream(store, rec, out) if req.stream else ResponseUnary(store, rec, out)
    stream = req.stream
    del req, chat, params, items, history  # a stream can last minutes: keep only what it needs
    try:
        return await serve_generation(request, state, model, endpoint=ENDPOINT, stream=stream, build=build,
                                      encoder=encoder)
    except ApiError as err:
        store.abandon(rec, _error_body(err))
        raise
    except BaseException:
        store.abandon(rec, None)
        raise


async def _start_background(request: web.Request, state: ServerState, store: ResponsesStore, model: ServedModel,
                            rec: StoredResponse, out: OutputAssembler, build: Any) -> web.Response:
    """Build now (bad input is a 4xx status, not a failed response), then generate in a store-owned task."""
    try:
        gen = await build
    except BaseException:
        store.discard(rec)
        raise
    store.run(rec, _background(request, state, store, model, rec, out, gen))
    return json_response(rec.snapshot())


async def _background(request: web.Request, state: ServerState, store: ResponsesStore, model: ServedModel,
                      rec: StoredResponse, out: OutputAssembler, gen: Generation) -> None:
    """A background response's generation: the same request path as a unary one (admission, metrics, timeout);
    the request object is only carried along (the unary path never writes to it)."""

    async def built() -> Generation:
        return gen

    try:
        await serve_generation(request, state, model, endpoint=ENDPOINT, stream=False, build=built(),
                               encoder=ResponseUnary(store, rec, out))
    except ApiError as err:
        store.finish(rec, "failed", error=_error_body(err))
    except asyncio.CancelledError:
        store.finish(rec, "cancelled")
        raise


def _stored(request: web.Request) -> StoredResponse:
    rid = request.match_info["response_id"]
    rec = request.app[STORE].get(rid)
    if rec is None:
        raise ApiError(404, f"No response found with id '{rid}'.", param="response_id", code="response_not_found")
    return rec


async def get_response(request: web.Request) -> web.Response:
    for key, value in request.query.items():
        if key == "stream" and value.lower() in ("true", "1"):
            raise InvalidRequest("streaming a stored response (stream=true) is not supported; GET it without stream",
                                 param="stream")
        if key != "stream" or value.lower() not in ("false", "0"):
            raise InvalidRequest(f"query parameter '{key}' is not supported", param=key)
    return json_response(_stored(request).snapshot())


async def delete_response(request: web.Request) -> web.Response:
    rec = _stored(request)
    request.app[STORE].delete(rec.id)
    return json_response({"id": rec.id, "object": "response", "deleted": True})


async def cancel_response(request: web.Request) -> web.Response:
    rid = request.match_info["response_id"]
    rec = await request.app[STORE].cancel(rid)
    if rec is None:
        raise ApiError(404, f"No response found with id '{rid}'.", param="response_id", code="response_not_found")
    return json_response(rec.snapshot())


def add_routes(app: web.Application) -> None:
    """Mount /v1/responses with its bounded store (--responses-store-size, --responses-store-ttl)."""
    s = app[STATE].settings
    store = ResponsesStore(s.responses_store_size, s.responses_store_ttl)
    app[STORE] = store

    async def _close(_: web.Application) -> None:
        await store.close()

    app.on_cleanup.append(_close)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
