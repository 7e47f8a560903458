"""Chat template rendering with the semantics of transformers' `apply_chat_template`, on jinja2 alone."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.runtime import LoopContext
from jinja2.utils import Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Names the renderer sets itself; a caller's template kwargs may not replace them.
_RESERVED = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class TemplateError(ValueError):
    """The chat template rejected the conversation or failed to render it (a client error: HTTP 400).

    The message is the template's own (raise_exception) or a one-line cause, without a "chat template" prefix.
    """


class _RaisedByTemplate(jinja2.TemplateError):
    """raise_exception(...) called from inside a template."""


def _raise_exception(message: str) -> None:
    raise _RaisedByTemplate(str(message))


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant spans in transformers; here it only renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


_DICT_ATTRS = frozenset(dir(dict))
# str methods the sandbox would allow anyway (format / format_map keep the sandbox's own wrapping).
_STR_METHODS = frozenset(a for a in dir(str) if not a.startswith("_") and a not in ("format", "format_map"))


class _ChatSandbox(ImmutableSandboxedEnvironment):
    """The sandbox transformers uses, with fast paths for `message.role` on plain dicts, str methods, `loop.*` and `ns.*`.

    Both return exactly what the generic sandbox lookup returns (attribute first, then item) but skip its
    exception round trip and safety checks, which dominate render time for chat templates.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        cls = type(obj)
        if cls is dict and attribute not in _DICT_ATTRS:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if cls is str and attribute in _STR_METHODS:
            return getattr(obj, attribute)
        if (cls is LoopContext or cls is Namespace) and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _ChatSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


@lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"syntax error at line {e.lineno}: {e.message}") from None


def _final_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        for block in reversed(content):
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                return block["text"]
    raise TemplateError("continue_final_message is set but the final message has no text to continue")


class ChatTemplate:
    """A compiled chat template; `render` turns an OpenAI-style message list into the prompt string."""

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None) -> None:
        self.source = source
        self._template = _compile(source)
        self._special: dict[str, str] = {}
        if bos_token is not None:
            self._special["bos_token"] = bos_token
        if eos_token is not None:
            self._special["eos_token"] = eos_token

    def render(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        add_generation_prompt: bool = True,
        documents: Any = None,
        **template_kwargs: Any,
    ) -> str:
        """Render the prompt. Extra kwargs (enable_thinking, ...) reach the template as variables;
        `continue_final_message=True` leaves the last message open for the model to continue."""
        continue_final = bool(template_kwargs.pop("continue_final_message", False))
        if continue_final and add_generation_prompt:
            raise TemplateError("continue_final_message and add_generation_prompt cannot both be true")
        variables = dict(self._special)
        for key, value in template_kwargs.items():
            if key not in _RESERVED:
                variables[key] = value
        try:
            rendered = self._template.render(
                messages=messages,
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except _RaisedByTemplate as e:
            raise TemplateError(str(e)) from None
        except jinja2.TemplateError as e:
            raise TemplateError(e.message or type(e).__name__) from None
        except Exception as e:  # a TypeError / KeyError / ... raised while evaluating the template
            raise TemplateError(f"{type(e).__name__}: {e}") from None
        if continue_final and messages:
            rendered = _truncate_after_final(rendered, _final_text(messages[-1]))
        return rendered


def _truncate_after_final(rendered: str, final: str) -> str:
    """Cut the rendered prompt right after the last message's text (transformers' continue_final_message)."""
    stripped = final.strip()
    if stripped not in rendered:
        raise TemplateError("continue_final_message is set but the final message does not appear in the rendered prompt")
    loc = rendered.rindex(stripped)
    if rendered[loc : loc + len(final.lstrip())] == final:
        return rendered[: loc + len(final.lstrip())]
    return rendered[: loc + len(stripped)]
