"""Chat requests, API-neutral: messages → template → tokens → choices with parsers → a Generation."""

from __future__ import annotations

import time
from typing import Any

from dynamo_mono.parsers.stream import build_output_parser
from dynamo_mono.protocol.errors import ApiError
from dynamo_mono.serving.choice import ChoiceState
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import Prompt, ServedModel
from dynamo_mono.serving.params import GenParams, check_limits, engine_requests


def flatten_content(content: Any) -> tuple[Any, list[dict]]:
    """Text parts joined by newlines (vLLM's 'string' content format); other parts become multimodal items."""
    if not isinstance(content, list):
        return content, []
    texts: list[str] = []
    media: list[dict] = []
    for part in content:
        if part.get("type") == "text":
            texts.append(part.get("text") or "")
        else:
            media.append(part)
    return "\n".join(texts), media


def check_tool_choice(tools: list[dict] | None, tool_choice: Any) -> None:
    if tool_choice is None or tool_choice in ("none", "auto"):
        return
    if not tools:
        raise ApiError(400, f"tool_choice={tool_choice!r} requires 'tools'", param="tool_choice")
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        names = [t.get("function", {}).get("name") for t in tools]
        if name not in names:
            raise ApiError(400, f"tool_choice names function '{name}', which is not in tools ({names})",
                           param="tool_choice")


def admission_queues(state: Any, model: ServedModel) -> tuple:
    """The queues a request of this model passes, per model first (so a slot is never held globally while
    waiting on one model)."""
    return tuple(q for q in (model.admission, state.admission) if q is not None and q.limit is not None)


class ChatPipeline:
    """Builds the Generation for a chat request; shared by the OpenAI and Anthropic routes."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def check(self, p: GenParams, n_messages: int) -> None:
        s = self.state.settings
        if n_messages > s.max_messages:
            raise ApiError(400, f"{n_messages} messages exceed the limit of {s.max_messages}", param="messages")
        check_limits(p, max_n=s.max_n, max_stops=s.max_stop_sequences, max_top_logprobs=s.max_top_logprobs,
                 max_stop_chars=s.max_stop_chars)

    async def prompt_for(self, model: ServedModel, messages: list[dict], *, tools: list[dict] | None,
                         add_generation_prompt: bool = True, continue_final_message: bool = False,
                         template_kwargs: dict | None = None) -> Prompt:
        metrics = self.state.metrics
        t0 = time.perf_counter()
        media: list[dict] = []
        rendered_msgs = []
        for m in messages:
            content, items = flatten_content(m.get("content"))
            media.extend(items)
            rendered_msgs.append({**m, "content": content} if items or isinstance(m.get("content"), list) else m)
        if media and "image" not in (model.pool.card().modalities if model.pool.card() else []):
            kinds = sorted({str(p.get("type")) for p in media})
            raise ApiError(400, f"model '{model.name}' accepts text only; got content parts of type {kinds}",
                           param="messages")
        text = model.render_chat(rendered_msgs, tools=tools, add_generation_prompt=add_generation_prompt,
                                 continue_final_message=continue_final_message, template_kwargs=template_kwargs)
        t1 = time.perf_counter()
        ids = await model.tokenize(text)
        t2 = time.perf_counter()
        mm = metrics.model(model.name)
        mm.template.observe(t1 - t0)
        mm.tokenize.observe(t2 - t1)
        return model.make_prompt(ids, text)

    def generation(self, model: ServedModel, prompt: Prompt, p: GenParams, request_id: str, *,
                   template_kwargs: dict | None = None, parse: bool = True) -> Generation:
        max_tokens = model.resolve_max_tokens(len(prompt.token_ids), p, self.state.settings.max_tokens_limit)
        reqs = engine_requests(request_id, model.name, prompt.token_ids, prompt.block_hashes, p, max_tokens,
                               model.info.eos_token_ids)
        states = []
        for i in range(p.n):
            parser = None
            if parse:
                parser = build_output_parser(model.reasoning_parser, model.tool_call_parser, tools=p.tools,
                                             tool_choice=p.tool_choice, chat_template_kwargs=template_kwargs,
                                             registry=self.state.plugins)
            states.append(ChoiceState(i, model.tokenizer, stops=p.stop, skip_special_tokens=p.skip_special_tokens,
                                      parser=parser, want_logprobs=p.logprobs is not None,
                                      include_stop=p.include_stop_str_in_output,
                                      prompt_tail=prompt.token_ids[-5:]))
        self.state.metrics.model(model.name).priority.observe(p.priority)
        return Generation(model.pool, reqs, states, len(prompt.token_ids), metrics=self.state.metrics,
                          model=model.name, admission=admission_queues(self.state, model),
                          latency_sensitivity=p.latency_sensitivity)
