"""BlockAssembler: parser Steps → Anthropic content blocks, for the cases a scripted engine cannot produce."""

from __future__ import annotations

import pytest

from dynamo_mono.http.anthropic_routes import BlockAssembler, thinking_signature
from dynamo_mono.parsers.base import ToolCallDelta
from dynamo_mono.serving.choice import Step
from tests.anthropic.conftest import parse_sse
from tests.anthropic.test_anthropic_stream import assemble, block_events

pytestmark = pytest.mark.timeout(5)


def call(index: int, args: str, name: str | None = None) -> ToolCallDelta:
    return ToolCallDelta(index, "call_x" if name else None, name, args)


def run(steps: list[Step], **kw) -> tuple[list[dict], list[tuple[str, dict]], BlockAssembler]:
    """Feed the same steps unary and streaming; return (unary content, stream events, unary assembler)."""
    unary = BlockAssembler(stream=False, **kw)
    streaming = BlockAssembler(stream=True, **kw)
    for s in steps:
        unary.add(s)
        streaming.add(s)
    unary.finish()
    streaming.finish()
    return unary.content, parse_sse(streaming.take().decode()), unary


def test_non_object_arguments_become_text() -> None:
    content, events, asm = run([Step(0, content="Result: "),
                                Step(0, tool_calls=[call(0, "", name="get_weather")]),
                                Step(0, tool_calls=[call(0, '["Paris"]')])])
    assert content == [{"type": "text", "text": "Result: "}, {"type": "text", "text": '["Paris"]'}]
    assert assemble(events) == content and asm.tool_uses == 0


def test_unparseable_object_arguments_become_text_when_not_streaming() -> None:
    content, events, asm = run([Step(0, tool_calls=[call(0, '{"city": ', name="get_weather")])])
    assert content == [{"type": "text", "text": '{"city": '}] and asm.tool_uses == 0
    assert block_events(events) == ["start:tool_use", "delta:input_json_delta", "stop"]  # already streaming


def test_call_without_arguments_has_empty_input() -> None:
    content, events, _ = run([Step(0, tool_calls=[call(0, "", name="now")]), Step(0, content="done")])
    assert content == [{"type": "tool_use", "id": content[0]["id"], "name": "now", "input": {}},
                       {"type": "text", "text": "done"}]
    blocks = assemble(events)
    assert blocks[0]["input"] == {} and blocks[1] == {"type": "text", "text": "done"}


def test_single_tool_call_drops_later_calls() -> None:
    steps = [Step(0, tool_calls=[call(0, '{"a": 1}', name="f"), call(1, '{"b": 2}', name="g")])]
    content, events, _ = run(steps, single_tool_call=True)
    assert [b["name"] for b in content] == ["f"] and len(assemble(events)) == 1


def test_omitted_thinking_streams_only_the_signature() -> None:
    content, events, _ = run([Step(0, reasoning="secret "), Step(0, reasoning="plan"), Step(0, content="ok")],
                             omit_thinking=True)
    sig = thinking_signature("secret plan")
    assert content[0] == {"type": "thinking", "thinking": "", "signature": sig}
    assert block_events(events) == ["start:thinking", "delta:signature_delta", "stop", "start:text",
                                    "delta:text_delta", "stop"]
    assert assemble(events)[0] == {"type": "thinking", "thinking": "", "signature": sig}


def test_whitespace_rules() -> None:
    # leading whitespace of the first block is model output and kept; after another block it is dropped
    content, _, _ = run([Step(0, content="  "), Step(0, content="hi")])
    assert content == [{"type": "text", "text": "  hi"}]
    content, _, _ = run([Step(0, reasoning="r"), Step(0, content="\n\n"), Step(0, content="answer  ")])
    assert content[1] == {"type": "text", "text": "answer  "}
    content, events, _ = run([Step(0, content=" \n")])
    assert content == [] and events == []
