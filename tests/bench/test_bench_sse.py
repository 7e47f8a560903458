"""The cheap SSE scanner: which lines count as tokens, usage, errors and end of stream."""

from dynamo_mono.bench import sse


def test_classify_chat_chunks():
    assert sse.classify(b'data: {"choices":[{"delta":{"role":"assistant","content":"Hi"}}]}') == sse.TOKEN
    assert sse.classify(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}') == sse.OTHER
    assert sse.classify(b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}') == sse.OTHER
    assert sse.classify(b'data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}') == sse.TOKEN
    assert sse.classify(b'data: {"choices":[{"text":"x","index":0}]}') == sse.TOKEN
    assert sse.classify(b'data: {"choices":[],"usage":{"completion_tokens":3}}') == sse.USAGE
    assert sse.classify(b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}') == sse.TOKEN
    assert sse.classify(b"data: [DONE]") == sse.DONE
    assert sse.classify(b'data: {"error":{"message":"boom"}}') == sse.ERROR
    assert sse.classify(b": keep-alive") == sse.OTHER
    assert sse.classify(b"event: message_start") == sse.OTHER


def test_escaped_quote_content_is_text():
    assert sse.has_text(b'{"delta":{"content":"\\"quoted\\""}}')


def test_usage_and_error_extraction():
    assert sse.usage_of(b'data: {"choices":[],"usage":{"completion_tokens":3,"prompt_tokens":9}}') == {
        "completion_tokens": 3, "prompt_tokens": 9}
    assert sse.usage_of(b"data: {broken") is None
    assert sse.error_of(b'data: {"error":{"message":"engine died"}}') == "engine died"


def test_line_splitter_handles_split_reads_and_crlf():
    s = sse.LineSplitter()
    assert s.feed(b'data: {"a"') == []
    assert s.feed(b':1}\r\n\r\ndata: [DO') == [b'data: {"a":1}']
    assert s.feed(b"NE]\n\n") == [b"data: [DONE]"]
