"""Chat requests, API-neutral: messages → template → tokens → choices with parsers → a Generation."""

from __future__ import annotations

import time
from typing import Any

from dynamo_mono.parsers.stream import build_output_parser
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.serving.choice import ChoiceState
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.model import Prompt, ServedModel
from dynamo_mono.serving.params import GenParams, check_capabilities, check_limits, engine_requests


# Content part type -> the input modality a model card must list to accept it.
PART_MODALITY = {"image_url": "image", "image": "image", "input_image": "image", "video_url": "video",
                 "input_audio": "audio", "audio_url": "audio"}


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


def check_media(model: ServedModel, media: list[dict]) -> None:
    """Every non-text part must be a medium the model's engine declares (it then receives the parts);
    anything else is refused by name, never dropped."""
    card = model.pool.card()
    accepted = set(card.modalities) if card is not None else set()
    for part in media:
        kind = str(part.get("type"))
        modality = PART_MODALITY.get(kind)
        if modality is None:
            raise InvalidRequest(f"unsupported content part type '{kind}'", param="messages")
        if modality not in accepted:
            raise InvalidRequest(f"model '{model.name}' does not accept {modality} input (content part '{kind}'); "
                                 f"it accepts {sorted(accepted) or ['text']}", param="messages")


def check_tool_choice(tools: list[dict] | None, tool_choice: Any) -> None:
    if tool_choice is None or tool_choice in ("none", "auto"):
        return
    if not tools:
        raise InvalidRequest(f"tool_choice={tool_choice!r} requires 'tools'", param="tool_choice")
    if isinstance(tool_choice, dict):
        name = tool_choice["function"]["name"]
        names = [t.get("function", {}).get("name") for t in tools]
        if name not in names:
            raise InvalidRequest(f"tool_choice names function '{name}', which is not in tools ({names})",
                           param="tool_choice")


def admission_queues(state: Any, model: ServedModel) -> tuple:
    """The queues a request of this model passes, per model first (so a slot is never held globally while
    waiting on one model)."""
    return tuple(q for q in (model.admission, state.admission) if q is not None and q.limit is not None)


class ChatPipeline:
    """Builds the Generation for a chat request; shared by the OpenAI and Anthropic routes."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def check(self, p: GenParams, n_messages: int, model: ServedModel) -> None:
        s = self.state.settings
        if n_messages > s.max_messages:
            raise InvalidRequest(f"{n_messages} messages exceed the limit of {s.max_messages}", param="messages")
        check_limits(p, max_n=s.max_n, max_stops=s.max_stop_sequences, max_top_logprobs=s.max_top_logprobs,
                     max_stop_chars=s.max_stop_chars)
        check_capabilities(p, model.pool.card())

    async def prompt_for(self, model: ServedModel, messages: list[dict], *, tools: list[dict] | None,
                         add_generation_prompt: bool = True, continue_final_message: bool = False,
                         template_kwargs: dict | None = None, documents: list[dict] | None = None) -> Prompt:
        metrics = self.state.metrics
        t0 = time.perf_counter()
        media: list[dict] = []
        rendered_msgs = []
        for m in messages:
            content, items = flatten_content(m.get("content"))
            media.extend(items)
            rendered_msgs.append({**m, "content": content} if items or isinstance(m.get("content"), list) else m)
        check_media(model, media)
        text = model.render_chat(rendered_msgs, tools=tools, add_generation_prompt=add_generation_prompt,
                                 continue_final_message=continue_final_message, template_kwargs=template_kwargs,
                                 documents=documents)
        t1 = time.perf_counter()
        ids = await model.tokenize(text)
        t2 = time.perf_counter()
        mm = metrics.model(model.name)
        mm.template.observe(t1 - t0)
        mm.tokenize.observe(t2 - t1)
        return model.make_prompt(ids, text, media)

    def generation(self, model: ServedModel, prompt: Prompt, p: GenParams, request_id: str, *,
                   template_kwargs: dict | None = None, parse: bool = True) -> Generation:
        max_tokens = model.resolve_max_tokens(len(prompt.token_ids), p, self.state.settings.max_tokens_limit)
        reqs = engine_requests(request_id, model.name, prompt.token_ids, prompt.block_hashes, p, max_tokens,
                               model.info.eos_token_ids, prompt.media)
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
                                      prompt_tail=prompt.token_ids[-5:], stop_conditions=reqs[i].stop))
        self.state.metrics.model(model.name).priority.observe(p.priority)
        return Generation(model.pool, reqs, states, len(prompt.token_ids), metrics=self.state.metrics,
                          model=model.name, admission=admission_queues(self.state, model),
                          latency_sensitivity=p.latency_sensitivity)
