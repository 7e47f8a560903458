"""A served model: tokenizer and template, its instance pool, parsers, and prompt preparation."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from typing import Any

from dynamo_mono.block_hash import SEED, MediaSpan, block_hashes
from dynamo_mono.engine import MediaItem
from dynamo_mono.preprocess.chat_template import TemplateError
from dynamo_mono.preprocess.model_dir import ModelInfo
from dynamo_mono.serving.errors import ContextLengthExceeded, InvalidRequest
from dynamo_mono.serving.params import GenParams
from dynamo_mono.serving.pool import Instance, InstancePool

# Prompts longer than this (in characters) are tokenized on a worker thread. Only `encode_batch` releases the
# GIL in HF tokenizers (plain `encode` holds it), so the offloaded call uses it.
OFFLOAD_CHARS = 1024
# The exact fast path (preprocess/fast_bpe.py) is Python and holds the GIL: on a worker thread it would block the
# loop just as long, plus the hop, so offloading it gains nothing. With a warm piece cache it takes ~1/5 of HF's
# time, so prompts up to this many characters are encoded inline: the loop stalls no longer than HF's inline encode
# of OFFLOAD_CHARS did (~0.45 vs ~0.5 ms on a 2-core VM, tests/benchmarks/bench_tokenize.py), and the ids are ready
# sooner than from the offloaded HF call. Longer prompts still go to HF's encode_batch on a thread: same ids, same
# latency as before, and no long stall of the loop.
FAST_INLINE_CHARS = 4096


@dataclass(slots=True)
class Prompt:
    """A tokenized prompt and what the router and usage need from it."""

    token_ids: list[int]
    block_hashes: list[int]
    text: str | None = None
    media: list[MediaItem] = field(default_factory=list)  # its media, placeholders placed (start, length)


class ServedModel:
    """Everything the API layer needs to serve one model name.

    `kind` is chat | embedding | image | video | audio; `configured` models come from the CLI / config file
    (the others are brought by remote workers and leave with them). The explicit parsers are the operator's
    choice; without one, the parser the instances announce in their cards applies. A LoRA adapter is a
    subclass (lora.model.LoraModel) with `lora_name` and `parent` set.
    """

    lora_name: str | None = None  # the adapter requests of this model generate with (EngineRequest.lora_name)
    parent: "ServedModel | None" = None  # an adapter's base model
    hash_seed: int = SEED  # block-hash seed of its prompts (block_hash.lora_seed for an adapter)

    def __init__(self, name: str, info: ModelInfo, pool: InstancePool, *, kind: str = "chat",
                 configured: bool = True, reasoning_parser: str | None = None, tool_call_parser: str | None = None,
                 admission: Any = None) -> None:
        self.name, self.info, self.pool, self.kind, self.configured = name, info, pool, kind, configured
        self.explicit_reasoning_parser = reasoning_parser
        self.explicit_tool_call_parser = tool_call_parser
        self.admission = admission
        self.created = int(time.time())

    @property
    def tokenizer(self) -> Any:
        return self.info.tokenizer

    @property
    def reasoning_parser(self) -> str | None:
        """The operator's parser, else the one the instances announce in their cards, else the model files'."""
        return self._parser("reasoning_parser", self.explicit_reasoning_parser)

    @property
    def tool_call_parser(self) -> str | None:
        return self._parser("tool_call_parser", self.explicit_tool_call_parser)

    def _parser(self, attr: str, explicit: str | None) -> str | None:
        if explicit is not None:
            return explicit
        card = self.pool.card()
        announced = getattr(card, attr) if card is not None else None
        return announced or getattr(self.info, attr)

    @property
    def block_size(self) -> int:
        return self.pool.router.block_size

    @property
    def max_model_len(self) -> int:
        card = self.pool.card()
        return card.max_model_len if card is not None else self.info.max_model_len

    def add_instance(self, instance: Instance) -> None:
        """Route to a new instance; the first one sets the router's block size (ValueError on a mismatch)."""
        self.pool.router.adopt_block_size(instance.card.block_size)
        self.pool.add(instance)

    # --- preparation ------------------------------------------------------------------------
    def render_chat(self, messages: list[dict], *, tools: list[dict] | None, add_generation_prompt: bool,
                    continue_final_message: bool = False, template_kwargs: dict | None = None,
                    documents: list[dict] | None = None) -> str:
        template = self.info.chat_template
        if template is None:
            raise InvalidRequest(f"model '{self.name}' has no chat template; use /v1/completions "
                                 "or start the server with --chat-template")
        kwargs = dict(template_kwargs or {})
        for reserved in ("messages", "tools", "add_generation_prompt", "documents"):
            kwargs.pop(reserved, None)
        try:
            return template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt and
                                   not continue_final_message, continue_final_message=continue_final_message,
                                   documents=documents, **kwargs)
        except TemplateError as exc:
            raise InvalidRequest(f"chat template error: {exc}") from None

    async def tokenize(self, text: str) -> list[int]:
        tok = self.info.tokenizer
        if len(text) > (FAST_INLINE_CHARS if tok.fast_encoder is not None else OFFLOAD_CHARS):
            encode = functools.partial(tok.encode_batch, [text], release_gil=True)
            batch = await asyncio.get_running_loop().run_in_executor(None, encode)
            return batch[0]
        return tok.encode(text)

    def make_prompt(self, token_ids: list[int], text: str | None = None,
                    media: list[MediaItem] | None = None) -> Prompt:
        """The prompt with its block hashes (each media item's content hash mixed into the blocks it covers)."""
        t0 = time.perf_counter()
        spans = [MediaSpan(m.content_hash, m.start, m.length) for m in media] if media else ()
        hashes = block_hashes(token_ids, self.block_size, media=spans, seed=self.hash_seed)
        self.pool.router.observe_block_hashing_ms((time.perf_counter() - t0) * 1000.0)
        return Prompt(token_ids, hashes, text, list(media or ()))

    def resolve_max_tokens(self, prompt_len: int, p: GenParams, cap: int | None) -> int:
        """max_tokens after the context check: 400 with both numbers when the request cannot fit."""
        ctx = self.max_model_len
        if prompt_len >= ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {ctx} tokens. However, your prompt has {prompt_len} "
                f"tokens, leaving no room for output.", param="messages")
        if p.max_tokens is None:
            mt = ctx - prompt_len
            return min(mt, cap) if cap is not None else mt
        if cap is not None and p.max_tokens > cap:
            raise InvalidRequest(f"max_tokens={p.max_tokens} exceeds the server limit of {cap}", param="max_tokens")
        if prompt_len + p.max_tokens > ctx:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{prompt_len + p.max_tokens} tokens ({prompt_len} in the prompt, {p.max_tokens} for the completion). "
                f"Please reduce the prompt or max_tokens.", param="max_tokens")
        return p.max_tokens
