"""OpenAI routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from dynamo_mono.engine import EngineError
from dynamo_mono.http.body import read_json, validate
from dynamo_mono.http.failures import engine_failure, request_timeout
from dynamo_mono.http.middleware import json_response
from dynamo_mono.http.sse import DONE, data_event, open_stream
from dynamo_mono.http.state import STATE, ServerState
from dynamo_mono.http.tracking import RequestTracker
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.protocol.openai import ChatCompletionRequest, CompletionRequest
from dynamo_mono.serving.chat import ChatPipeline, admission_queues, check_tool_choice
from dynamo_mono.serving.choice import ChoiceState, Step
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.params import GenParams, check_limits, engine_requests, from_openai


# --- chat ------------------------------------------------------------------------------------
def _chat_logprobs(step: Step) -> dict | None:
    if step.logprobs is None:
        return None
    return {"content": [
        {"token": tok, "logprob": lp, "bytes": list(tok.encode()),
         "top_logprobs": [{"token": t, "logprob": l, "bytes": list(t.encode())} for t, l in top]}
        for tok, lp, top, _ in step.logprobs]}


def _tool_call_dicts(deltas: list[Any]) -> list[dict]:
    out = []
    for d in deltas:
        item: dict[str, Any] = {"index": d.index}
        if d.id is not None:
            item["id"] = d.id
            item["type"] = "function"
        fn: dict[str, Any] = {}
        if d.name is not None:
            fn["name"] = d.name
        fn["arguments"] = d.arguments
        item["function"] = fn
        out.append(item)
    return out


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = validate(ChatCompletionRequest, await read_json(request))
    model = state.model(req.model)
    if req.chat_template is not None:
        raise ApiError(400, "per-request chat_template is not allowed; start the server with --chat-template",
                       param="chat_template")
    params = from_openai(req, logprobs=(req.top_logprobs or 0) if req.logprobs else None)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    check_tool_choice(tools, req.tool_choice)
    params.tools = None if req.tool_choice == "none" else tools
    params.tool_choice = req.tool_choice
    pipeline = ChatPipeline(state)
    pipeline.check(params, len(req.messages))
    with RequestTracker(state, model.name, "chat_completions", req.stream) as tracker:
        rid = "chatcmpl-" + (req.request_id or request["request_id"])
        gen = await _chat_generation(pipeline, model, req, params, tools, rid)
        stream, model_name = req.stream, req.model
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        # A stream can last minutes: keep only what it needs (memory per in-flight request).
        del req, params, tools, pipeline
        await gen.admit()
        try:
            if stream:
                return await _stream_chat(request, state, gen, rid, model_name, include_usage, tracker)
            return await _unary_chat(state, gen, rid, model_name)
        finally:
            gen.finish()


async def _chat_generation(pipeline: ChatPipeline, model: ServedModel, req: ChatCompletionRequest,
                           params: GenParams, tools: list[dict] | None, rid: str) -> Generation:
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    prompt = await pipeline.prompt_for(model, messages, tools=tools, add_generation_prompt=req.add_generation_prompt,
                                       continue_final_message=req.continue_final_message,
                                       template_kwargs=req.chat_template_kwargs)
    return pipeline.generation(model, prompt, params, rid, template_kwargs=req.chat_template_kwargs)


async def _unary_chat(state: ServerState, gen: Generation, rid: str, model_name: str) -> web.Response:
    n = len(gen.states)
    content = [[] for _ in range(n)]
    reasoning = [[] for _ in range(n)]
    calls: list[dict[int, dict]] = [{} for _ in range(n)]
    logprobs: list[list | None] = [None] * n
    try:
        async with asyncio.timeout(request_timeout(state)):
            async for step in gen.steps():
                i = step.index
                if step.content:
                    content[i].append(step.content)
                if step.reasoning:
                    reasoning[i].append(step.reasoning)
                for d in step.tool_calls:
                    c = calls[i].setdefault(d.index, {"id": None, "type": "function",
                                                      "function": {"name": "", "arguments": ""}})
                    if d.id is not None:
                        c["id"] = d.id
                    if d.name is not None:
                        c["function"]["name"] = d.name
                    c["function"]["arguments"] += d.arguments
                if step.logprobs is not None:
                    lp = _chat_logprobs(step)
                    logprobs[i] = (logprobs[i] or []) + lp["content"]
    except (EngineError, TimeoutError) as exc:
        raise engine_failure(exc) from None
    choices = []
    for i, st in enumerate(gen.states):
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(content[i]) if content[i] or not calls[i]
                               else None}
        if reasoning[i]:
            msg["reasoning_content"] = "".join(reasoning[i])
        if calls[i]:
            msg["tool_calls"] = [calls[i][k] for k in sorted(calls[i])]
        choices.append({"index": i, "message": msg,
                        "logprobs": {"content": logprobs[i]} if logprobs[i] is not None else None,
                        "finish_reason": st.finish_reason, "stop_reason": st.stop_reason})
    return json_response({"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_name,
                          "choices": choices, "usage": gen.usage(), "system_fingerprint": None})


async def _stream_chat(request: web.Request, state: ServerState, gen: Generation, rid: str, model_name: str,
                       include_usage: bool, tracker: RequestTracker) -> web.StreamResponse:
    stream = await open_stream(request)
    created = int(time.time())
    head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model_name}
    role_sent = [False] * len(gen.states)
    # The common chunk (content only) is two constant byte strings around the JSON-encoded text.
    head_json = orjson.dumps(head)[:-1]
    content_pre = [head_json + b',"choices":[{"index":%d,"delta":{"content":' % i for i in range(len(gen.states))]
    content_post = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def chunk(i: int, delta: dict, finish: str | None = None, logprobs: dict | None = None) -> bytes:
        return data_event({**head, "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                                "finish_reason": finish}]})

    try:
        async with asyncio.timeout(request_timeout(state)):
            async for step in gen.steps():
                i = step.index
                if (role_sent[i] and step.content and not step.reasoning and not step.tool_calls
                        and step.logprobs is None and step.finish_reason is None):
                    await stream.send(b"data: " + content_pre[i] + orjson.dumps(step.content) + content_post)
                    continue
                delta: dict[str, Any] = {}
                if not role_sent[i]:
                    delta["role"] = "assistant"
                if step.reasoning:
                    delta["reasoning_content"] = step.reasoning
                if step.content or (not role_sent[i] and not step.tool_calls):
                    delta["content"] = step.content
                if step.tool_calls:
                    delta["tool_calls"] = _tool_call_dicts(step.tool_calls)
                lp = _chat_logprobs(step)
                out = b""
                if len(delta) > (0 if role_sent[i] else 1) or lp is not None or not role_sent[i]:
                    role_sent[i] = True
                    out = chunk(i, delta, None, lp)
                if step.finish_reason is not None:
                    out += chunk(i, {}, step.finish_reason)
                if out:
                    await stream.send(out)
        tail = b""
        if include_usage:
            tail = data_event({**head, "choices": [], "usage": gen.usage()})
        await stream.send(tail + DONE)
    except (EngineError, TimeoutError, ApiError) as exc:
        err = exc if isinstance(exc, ApiError) else engine_failure(exc)
        tracker.fail(err.code or "engine_error")
        await stream.send(data_event(err.openai_body()) + DONE)
    return stream.response


# --- completions -----------------------------------------------------------------------------
def _prompts(req: CompletionRequest) -> list[str | list[int]]:
    p = req.prompt
    if isinstance(p, str):
        return [p]
    if p and isinstance(p[0], int):
        return [p]  # one token-id prompt
    return list(p)


def _completion_logprobs(step: Step, offset: int) -> tuple[dict | None, int]:
    if step.logprobs is None:
        return None, offset
    tokens, lps, tops, offs = [], [], [], []
    for tok, lp, top, _ in step.logprobs:
        tokens.append(tok)
        lps.append(lp)
        tops.append({t: l for t, l in top})
        offs.append(offset)
        offset += len(tok)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}, offset


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = await read_json(request)
    req = validate(CompletionRequest, body)
    model = state.model(req.model)
    if req.suffix:
        raise ApiError(400, "suffix is not supported", param="suffix")
    params = from_openai(req, logprobs=req.logprobs)
    s = state.settings
    check_limits(params, max_n=s.max_n, max_stops=s.max_stop_sequences, max_top_logprobs=s.max_top_logprobs,
                 max_stop_chars=s.max_stop_chars)
    prompts = _prompts(req)
    if len(prompts) * params.n > s.max_n * 16:
        raise ApiError(400, f"{len(prompts)} prompts x n={params.n} is too many choices", param="prompt")
    vocab = model.tokenizer.vocab_size
    with RequestTracker(state, model.name, "completions", req.stream) as tracker:
        rid = "cmpl-" + (req.request_id or request["request_id"])
        reqs, states, echoes, prompt_tokens = [], [], [], 0
        for pi, p in enumerate(prompts):
            if isinstance(p, str):
                ids = await model.tokenize(p)
                text = p
            else:
                if any(t >= vocab for t in p):
                    raise ApiError(400, f"token id out of range (vocab size {vocab})", param="prompt")
                ids, text = list(p), None
            if not ids:
                raise ApiError(400, "prompt is empty", param="prompt")
            prompt = model.make_prompt(ids, text)
            prompt_tokens += len(ids)
            max_tokens = model.resolve_max_tokens(len(ids), params, s.max_tokens_limit)
            sub = engine_requests(f"{rid}-p{pi}" if len(prompts) > 1 else rid, model.name, ids, prompt.block_hashes,
                                  params, max_tokens, model.info.eos_token_ids)
            for ci, r in enumerate(sub):
                idx = pi * params.n + ci
                reqs.append(r)
                states.append(ChoiceState(idx, model.tokenizer, stops=params.stop,
                                          skip_special_tokens=params.skip_special_tokens,
                                          want_logprobs=params.logprobs is not None,
                                          include_stop=params.include_stop_str_in_output,
                                          prompt_tail=ids[-5:]))
                echoes.append((text if text is not None else model.tokenizer.decode(ids)) if req.echo else "")
        gen = Generation(model.pool, reqs, states, prompt_tokens, metrics=state.metrics, model=model.name,
                         admission=admission_queues(state, model), latency_sensitivity=params.latency_sensitivity)
        await gen.admit()
        try:
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                return await _stream_completion(request, state, gen, rid, req.model, echoes, include_usage, tracker)
            return await _unary_completion(state, gen, rid, req.model, echoes)
        finally:
            gen.finish()


async def _unary_completion(state: ServerState, gen: Generation, rid: str, model_name: str,
                            echoes: list[str]) -> web.Response:
    n = len(gen.states)
    texts = [[e] if e else [] for e in echoes]
    logprobs: list[dict | None] = [None] * n
    offsets = [len(e) for e in echoes]
    try:
        async with asyncio.timeout(request_timeout(state)):
            async for step in gen.steps():
                i = step.index
                if step.content:
                    texts[i].append(step.content)
                lp, offsets[i] = _completion_logprobs(step, offsets[i])
                if lp is not None:
                    if logprobs[i] is None:
                        logprobs[i] = lp
                    else:
                        for k in lp:
                            logprobs[i][k].extend(lp[k])
    except (EngineError, TimeoutError) as exc:
        raise engine_failure(exc) from None
    choices = [{"index": i, "text": "".join(texts[i]), "logprobs": logprobs[i], "finish_reason": st.finish_reason,
                "stop_reason": st.stop_reason} for i, st in enumerate(gen.states)]
    return json_response({"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_name,
                          "choices": choices, "usage": gen.usage(), "system_fingerprint": None})


async def _stream_completion(request: web.Request, state: ServerState, gen: Generation, rid: str, model_name: str,
                             echoes: list[str], include_usage: bool, tracker: RequestTracker) -> web.StreamResponse:
    stream = await open_stream(request)
    head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_name}
    offsets = [len(e) for e in echoes]
    pending_echo = list(echoes)
    try:
        async with asyncio.timeout(request_timeout(state)):
            async for step in gen.steps():
                i = step.index
                text = step.content
                if pending_echo[i]:
                    text, pending_echo[i] = pending_echo[i] + text, ""
                lp, offsets[i] = _completion_logprobs(step, offsets[i])
                if text or lp is not None or step.finish_reason is not None:
                    await stream.send(data_event({**head, "choices": [
                        {"index": i, "text": text, "logprobs": lp, "finish_reason": step.finish_reason}]}))
        tail = data_event({**head, "choices": [], "usage": gen.usage()}) if include_usage else b""
        await stream.send(tail + DONE)
    except (EngineError, TimeoutError, ApiError) as exc:
        err = exc if isinstance(exc, ApiError) else engine_failure(exc)
        tracker.fail(err.code or "engine_error")
        await stream.send(data_event(err.openai_body()) + DONE)
    return stream.response


# --- models ----------------------------------------------------------------------------------
def _model_obj(m) -> dict:
    return {"id": m.name, "object": "model", "created": m.created, "owned_by": "dynamo-mono",
            "max_model_len": m.max_model_len}


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response({"object": "list", "data": [_model_obj(m) for m in state.models.values()
                                                                  if m.pool.instances]})


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(_model_obj(state.model(request.match_info["model"])))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
