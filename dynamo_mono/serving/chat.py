"""Chat requests, API-neutral: messages → template → tokens → choices with parsers → a Generation."""

from __future__ import annotations

import functools
import time
from typing import Any

from dynamo_mono.engine import MediaItem, ModelCard
from dynamo_mono.media.tokens import PlaceholderError, expand_placeholders, item_tokens
from dynamo_mono.parsers.stream import build_output_parser
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.serving.choice import ChoiceState
from dynamo_mono.serving.conversation import conversation
from dynamo_mono.serving.generation import Generation
from dynamo_mono.serving.media_input import LoadedMedia, check_parts
from dynamo_mono.serving.model import Prompt, ServedModel
from dynamo_mono.serving.params import GenParams, check_capabilities, check_limits, engine_requests


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
                         template_kwargs: dict | None = None, documents: list[dict] | None = None,
                         media_io_kwargs: dict | None = None) -> Prompt:
        """Template + tokens (+ media: checked against the card, fetched, decoded, placeholders expanded)."""
        metrics = self.state.metrics
        conv = conversation(messages)
        card = model.pool.card()
        loaded: list[LoadedMedia] = []
        media_in = self.state.media_input
        if conv.parts or media_io_kwargs is not None:
            if conv.parts:
                check_parts(card, model.name, conv.parts, media_in.max_items)
            io = media_in.io_options(media_io_kwargs)
            loaded = await media_in.load_all(conv.parts, io)
        t0 = time.perf_counter()
        render = functools.partial(model.render_chat, tools=tools, add_generation_prompt=add_generation_prompt,
                                   continue_final_message=continue_final_message, template_kwargs=template_kwargs,
                                   documents=documents)
        text = render(conv.template_messages())
        t1 = time.perf_counter()
        ids = await model.tokenize(text)
        t2 = time.perf_counter()
        items: list[MediaItem] = []
        specs = card.media_input if card is not None else {}
        if specs:
            try:
                ids, items = _place(ids, loaded, card)
            except PlaceholderError as exc:
                if not loaded or any(s.token_id in ids for s in specs.values()):
                    raise InvalidRequest(str(exc), param="messages") from None
                # The template rendered no media part: put the placeholders' text where the parts were.
                t1b = time.perf_counter()
                text = render(conv.fallback_messages({k: s.token for k, s in specs.items()}))
                t1 += time.perf_counter() - t1b
                ids = await model.tokenize(text)
                t2 = time.perf_counter()
                try:
                    ids, items = _place(ids, loaded, card)
                except PlaceholderError as exc:
                    raise InvalidRequest(str(exc), param="messages") from None
        mm = metrics.model(model.name)
        mm.template.observe(t1 - t0)
        mm.tokenize.observe(t2 - t1)
        return model.make_prompt(ids, text, items)

    def generation(self, model: ServedModel, prompt: Prompt, p: GenParams, request_id: str, *,
                   template_kwargs: dict | None = None, parse: bool = True) -> Generation:
        max_tokens = model.resolve_max_tokens(len(prompt.token_ids), p, self.state.settings.max_tokens_limit)
        reqs = engine_requests(request_id, model.name, prompt.token_ids, prompt.block_hashes, p, max_tokens,
                               model.info.eos_token_ids, prompt.media, lora_name=model.lora_name)
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


def _place(ids: list[int], loaded: list[LoadedMedia], card: ModelCard) -> tuple[list[int], list[MediaItem]]:
    """Expand each item's placeholder to the tokens the card says it takes; the MediaItems with their ranges."""
    specs = card.media_input
    counts = []
    for lm in loaded:
        try:
            counts.append(item_tokens(specs[lm.part.kind], lm.part.kind, lm.data, lm.sample_rate))
        except PlaceholderError as exc:
            raise lm.part.refuse(str(exc)) from None
    ids, placements = expand_placeholders(ids, [lm.part.kind for lm in loaded], counts, specs)
    return ids, [lm.item(p.start, p.length) for lm, p in zip(loaded, placements)]
