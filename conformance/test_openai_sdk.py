"""The official openai SDK against a real server: chat and completions, streaming, n, stop, logprobs, usage."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture
def aclient(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)


MSG = [{"role": "user", "content": "Tell me a story about a lighthouse."}]


def test_models_list(client: openai.OpenAI, model_name: str) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [model_name]
    assert client.models.retrieve(model_name).id == model_name


def test_chat_non_streaming(client: openai.OpenAI, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=20, seed=1)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    c = r.choices[0]
    assert c.message.role == "assistant" and c.message.content
    assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 20 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_chat_streaming_matches_unary(client: openai.OpenAI, model_name: str) -> None:
    unary = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=30, seed=7)
    stream = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=30, seed=7, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [unary.choices[0].finish_reason]
    assert text == unary.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == unary.usage.completion_tokens


async def test_async_streaming(aclient: openai.AsyncOpenAI, model_name: str) -> None:
    stream = await aclient.chat.completions.create(model=model_name, messages=MSG, max_tokens=10, stream=True,
                                                   extra_body={"ignore_eos": True})
    n_content = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            n_content += 1
    assert n_content >= 1
    r = await aclient.chat.completions.create(model=model_name, messages=MSG, max_tokens=10,
                                              extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 10 and r.choices[0].finish_reason == "length"


def test_n_choices(client: openai.OpenAI, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=12, n=3, seed=3,
                                       extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) > 1, "choices should differ"
    assert r.usage.completion_tokens == 36
    stream = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=12, n=3, seed=3,
                                            stream=True, extra_body={"ignore_eos": True})
    texts = {0: "", 1: "", 2: ""}
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
    assert [texts[i] for i in range(3)] == [c.message.content for c in r.choices]


def test_seed_determinism(client: openai.OpenAI, model_name: str) -> None:
    a = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=25, seed=42)
    b = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=25, seed=42)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_stop_string_never_in_output(client: openai.OpenAI, model_name: str) -> None:
    base = client.completions.create(model=model_name, prompt="once upon a time", max_tokens=40, seed=5,
                                     extra_body={"ignore_eos": True})
    text = base.choices[0].text
    assert len(text) > 10
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = text.index(stop)
    r = client.completions.create(model=model_name, prompt="once upon a time", max_tokens=40, seed=5, stop=[stop],
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == text[:cut]
    assert r.choices[0].finish_reason == "stop"
    s = client.completions.create(model=model_name, prompt="once upon a time", max_tokens=40, seed=5, stop=stop,
                                  stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in s if c.choices) == text[:cut]


def test_chat_logprobs_shapes(client: openai.OpenAI, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=8, logprobs=True, top_logprobs=3,
                                       extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 8
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        assert all(t.logprob <= 0 for t in item.top_logprobs)


def test_completions_forms(client: openai.OpenAI, model_name: str) -> None:
    r = client.completions.create(model=model_name, prompt=["a b c", "d e f"], max_tokens=5, n=2,
                                  extra_body={"ignore_eos": True})
    assert r.id.startswith("cmpl-")
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert r.usage.completion_tokens == 20
    r = client.completions.create(model=model_name, prompt=[1, 2, 3, 4], max_tokens=3, echo=True, logprobs=2,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and all(len(t) <= 2 for t in lp.top_logprobs)
    r = client.completions.create(model=model_name, prompt=[[5, 6], [7, 8, 9]], max_tokens=2,
                                  extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens == 5 and len(r.choices) == 2


def test_echo_prepends_prompt(client: openai.OpenAI, model_name: str) -> None:
    r = client.completions.create(model=model_name, prompt="hello world", max_tokens=3, echo=True)
    assert r.choices[0].text.startswith("hello world")


def test_errors_are_typed(client: openai.OpenAI, model_name: str) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MSG)
    assert "no-such-model" in e.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_name, messages=[])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_name, messages=MSG, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_name, messages=MSG, temperature=2.5)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_name, messages=MSG, extra_body={"bogus_field": 1})
    assert "bogus_field" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_name, messages=MSG, max_tokens=10_000_000)
    assert "10000000" in e.value.message and "context length" in e.value.message


def test_vllm_extensions_accepted(client: openai.OpenAI, model_name: str) -> None:
    r = client.chat.completions.create(model=model_name, messages=MSG, max_tokens=4, extra_body={
        "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1, "skip_special_tokens": True, "min_tokens": 2,
        "chat_template_kwargs": {"enable_thinking": False}, "nvext": {"ignore_eos": True, "agent_hints": {
            "priority": 1, "latency_sensitivity": 0.5, "osl": 4}}})
    assert r.usage.completion_tokens == 4
