"""OpenAI routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from dynamo_mono.http.body import read_json, validate
from dynamo_mono.http.generate import serve_generation
from dynamo_mono.http.middleware import json_response
from dynamo_mono.http.sse import DONE, data_event
from dynamo_mono.http.state import STATE
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.protocol.openai import ChatCompletionRequest, CompletionRequest
from dynamo_mono.serving.chat import ChatPipeline, check_tool_choice
from dynamo_mono.serving.choice import Step
from dynamo_mono.serving.completion import check_completion, completion_generation
from dynamo_mono.serving.errors import InvalidRequest, ModelNotFound
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.params import GenParams, from_openai


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
    model = state.model(req.model, kind="chat")
    if req.chat_template is not None:
        raise InvalidRequest("per-request chat_template is not allowed; start the server with --chat-template",
                             param="chat_template")
    params = from_openai(req, logprobs=(req.top_logprobs or 0) if req.logprobs else None)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    check_tool_choice(tools, req.tool_choice)
    params.tools = None if req.tool_choice == "none" else tools
    params.tool_choice = req.tool_choice
    pipeline = ChatPipeline(state)
    pipeline.check(params, len(req.messages), model)
    rid = "chatcmpl-" + (req.request_id or request["request_id"])
    build = _chat_generation(pipeline, model, req, params, tools, rid)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    single = not req.parallel_tool_calls
    encoder = (ChatStream(rid, req.model, req.n, include_usage, single_tool_call=single) if req.stream
               else ChatUnary(rid, req.model, req.n, single_tool_call=single))
    stream = req.stream
    # A stream can last minutes: keep only what it needs (memory per in-flight request).
    del req, params, tools, pipeline
    return await serve_generation(request, state, model, endpoint="chat_completions", stream=stream, build=build,
                                  encoder=encoder)


async def _chat_generation(pipeline: ChatPipeline, model: ServedModel, req: ChatCompletionRequest,
                           params: GenParams, tools: list[dict] | None, rid: str) -> Generation:
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    kwargs = req.chat_template_kwargs
    if req.reasoning_effort is not None:  # what templates with an effort switch (gpt-oss, ...) read
        kwargs = {"reasoning_effort": req.reasoning_effort, **(kwargs or {})}
    prompt = await pipeline.prompt_for(model, messages, tools=tools, add_generation_prompt=req.add_generation_prompt,
                                       continue_final_message=req.continue_final_message, template_kwargs=kwargs,
                                       documents=req.documents, media_io_kwargs=req.media_io_kwargs)
    return pipeline.generation(model, prompt, params, rid, template_kwargs=kwargs)


class ChatUnary:
    """Collects steps into a chat.completion object."""

    __slots__ = ("rid", "model", "content", "reasoning", "calls", "logprobs", "single_call")

    def __init__(self, rid: str, model: str, n: int, *, single_tool_call: bool = False) -> None:
        self.rid, self.model = rid, model
        self.single_call = single_tool_call  # parallel_tool_calls=false: the first call of each choice only
        self.content: list[list[str]] = [[] for _ in range(n)]
        self.reasoning: list[list[str]] = [[] for _ in range(n)]
        self.calls: list[dict[int, dict]] = [{} for _ in range(n)]
        self.logprobs: list[list | None] = [None] * n

    def open(self, gen: Generation) -> None:
        pass

    def step(self, step: Step) -> None:
        i = step.index
        if step.content:
            self.content[i].append(step.content)
        if step.reasoning:
            self.reasoning[i].append(step.reasoning)
        for d in step.tool_calls:
            if self.single_call and d.index > 0:
                continue
            c = self.calls[i].setdefault(d.index, {"id": None, "type": "function",
                                                   "function": {"name": "", "arguments": ""}})
            if d.id is not None:
                c["id"] = d.id
            if d.name is not None:
                c["function"]["name"] = d.name
            c["function"]["arguments"] += d.arguments
        if step.logprobs is not None:
            self.logprobs[i] = (self.logprobs[i] or []) + _chat_logprobs(step)["content"]

    def response(self, gen: Generation) -> web.Response:
        choices = []
        for i, st in enumerate(gen.states):
            content, calls = self.content[i], self.calls[i]
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not calls else None}
            if self.reasoning[i]:
                msg["reasoning_content"] = "".join(self.reasoning[i])
            if calls:
                msg["tool_calls"] = [calls[k] for k in sorted(calls)]
            lp = self.logprobs[i]
            choices.append({"index": i, "message": msg, "logprobs": {"content": lp} if lp is not None else None,
                            "finish_reason": st.finish_reason, "stop_reason": st.stop_reason})
        return json_response({"id": self.rid, "object": "chat.completion", "created": int(time.time()),
                              "model": self.model, "choices": choices, "usage": gen.usage(),
                              "system_fingerprint": None})


class ChatStream:
    """Steps as chat.completion.chunk events; the common content-only chunk is two constant byte strings
    around the JSON-encoded text."""

    __slots__ = ("head", "role_sent", "content_pre", "include_usage", "single_call")
    ping = None
    content_post = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def __init__(self, rid: str, model: str, n: int, include_usage: bool, *, single_tool_call: bool = False) -> None:
        self.single_call = single_tool_call
        self.head = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self.role_sent = [False] * n
        head_json = orjson.dumps(self.head)[:-1]
        self.content_pre = [b"data: " + head_json + b',"choices":[{"index":%d,"delta":{"content":' % i
                            for i in range(n)]
        self.include_usage = include_usage

    def _chunk(self, i: int, delta: dict, finish: str | None = None, logprobs: dict | None = None) -> bytes:
        return data_event({**self.head, "choices": [{"index": i, "delta": delta, "logprobs": logprobs,
                                                     "finish_reason": finish}]})

    def open(self, gen: Generation) -> bytes:
        return b""

    def step(self, step: Step) -> bytes:
        i = step.index
        role_sent = self.role_sent[i]
        if (role_sent and step.content and not step.reasoning and not step.tool_calls
                and step.logprobs is None and step.finish_reason is None):
            return self.content_pre[i] + orjson.dumps(step.content) + self.content_post
        delta: dict[str, Any] = {}
        if not role_sent:
            delta["role"] = "assistant"
        if step.reasoning:
            delta["reasoning_content"] = step.reasoning
        calls = step.tool_calls
        if calls and self.single_call:
            calls = [d for d in calls if d.index == 0]
        if step.content or (not role_sent and not calls):
            delta["content"] = step.content
        if calls:
            delta["tool_calls"] = _tool_call_dicts(calls)
        lp = _chat_logprobs(step)
        out = b""
        if len(delta) > (0 if role_sent else 1) or lp is not None or not role_sent:
            self.role_sent[i] = True
            out = self._chunk(i, delta, None, lp)
        if step.finish_reason is not None:
            out += self._chunk(i, {}, step.finish_reason)
        return out

    def close(self, gen: Generation) -> bytes:
        tail = data_event({**self.head, "choices": [], "usage": gen.usage()}) if self.include_usage else b""
        return tail + DONE

    def error(self, err: ApiError) -> bytes:
        return data_event(err.openai_body()) + DONE


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
    req = validate(CompletionRequest, await read_json(request))
    model = state.model(req.model, kind="chat")
    if req.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    params = from_openai(req, logprobs=req.logprobs)
    prompts = _prompts(req)
    check_completion(state.settings, model, params, len(prompts))
    rid = "cmpl-" + (req.request_id or request["request_id"])
    build = completion_generation(state, model, prompts, params, rid, echo=req.echo)
    n = len(prompts) * params.n
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    encoder = CompletionStream(rid, req.model, n, include_usage) if req.stream else CompletionUnary(rid, req.model, n)
    return await serve_generation(request, state, model, endpoint="completions", stream=req.stream, build=build,
                                  encoder=encoder)


class CompletionUnary:
    """Collects steps into a text_completion object (echoed prompts first)."""

    __slots__ = ("rid", "model", "texts", "logprobs", "offsets")

    def __init__(self, rid: str, model: str, n: int) -> None:
        self.rid, self.model = rid, model
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.logprobs: list[dict | None] = [None] * n
        self.offsets = [0] * n

    def open(self, gen: Generation) -> None:
        if gen.echoes:
            self.texts = [[e] if e else [] for e in gen.echoes]
            self.offsets = [len(e) for e in gen.echoes]

    def step(self, step: Step) -> None:
        i = step.index
        if step.content:
            self.texts[i].append(step.content)
        lp, self.offsets[i] = _completion_logprobs(step, self.offsets[i])
        if lp is not None:
            if self.logprobs[i] is None:
                self.logprobs[i] = lp
            else:
                for k in lp:
                    self.logprobs[i][k].extend(lp[k])

    def response(self, gen: Generation) -> web.Response:
        choices = [{"index": i, "text": "".join(self.texts[i]),
                    "logprobs": self.logprobs[i], "finish_reason": st.finish_reason, "stop_reason": st.stop_reason}
                   for i, st in enumerate(gen.states)]
        return json_response({"id": self.rid, "object": "text_completion", "created": int(time.time()),
                              "model": self.model, "choices": choices, "usage": gen.usage(),
                              "system_fingerprint": None})


class CompletionStream:
    """Steps as text_completion chunks; an echoed prompt leads its choice's first chunk."""

    __slots__ = ("head", "offsets", "pending_echo", "include_usage")
    ping = None

    def __init__(self, rid: str, model: str, n: int, include_usage: bool) -> None:
        self.head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model}
        self.offsets = [0] * n
        self.pending_echo = [""] * n
        self.include_usage = include_usage

    def open(self, gen: Generation) -> bytes:
        if gen.echoes:
            self.pending_echo = list(gen.echoes)
            self.offsets = [len(e) for e in gen.echoes]
        return b""

    def step(self, step: Step) -> bytes:
        i = step.index
        text = step.content
        if self.pending_echo[i]:
            text, self.pending_echo[i] = self.pending_echo[i] + text, ""
        lp, self.offsets[i] = _completion_logprobs(step, self.offsets[i])
        if text or lp is not None or step.finish_reason is not None:
            return data_event({**self.head, "choices": [
                {"index": i, "text": text, "logprobs": lp, "finish_reason": step.finish_reason}]})
        return b""

    def close(self, gen: Generation) -> bytes:
        tail = data_event({**self.head, "choices": [], "usage": gen.usage()}) if self.include_usage else b""
        return tail + DONE

    def error(self, err: ApiError) -> bytes:
        return data_event(err.openai_body()) + DONE


# --- models ----------------------------------------------------------------------------------
def _model_obj(m: ServedModel) -> dict:
    obj = {"id": m.name, "object": "model", "created": m.created, "owned_by": "dynamo-mono", "kind": m.kind,
           "max_model_len": m.max_model_len}
    if m.parent is not None:  # a LoRA adapter (vLLM's shape: parent = the base model)
        obj["parent"] = m.parent.name
    return obj


async def list_models(request: web.Request) -> web.Response:
    """Every model with at least one instance, whatever its kind."""
    state = request.app[STATE]
    return json_response({"object": "list", "data": [_model_obj(m) for m in state.models.values()
                                                      if m.pool.instances]})


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["model"]
    m = state.models.get(name)
    if m is None or not m.pool.instances:
        raise ModelNotFound(f"The model '{name}' does not exist", param="model")
    return json_response(_model_obj(m))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)
