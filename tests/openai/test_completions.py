"""POST /v1/completions in-process: prompt forms, echo, logprobs and offsets, n x prompts, stop strings, streaming."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import Completion

from tests.openai.conftest import MODEL, Server, completion, per_choice, reply

pytestmark = pytest.mark.timeout(10)
PATH = "/v1/completions"


async def unary(server: Server, payload: dict) -> dict:
    status, body = await server.post(PATH, payload)
    assert status == 200, body
    Completion.model_validate(body)
    return body


async def stream(server: Server, payload: dict) -> list[dict]:
    events = await server.stream(PATH, payload)
    chunks = events[:-1]
    for c in chunks:
        assert c["object"] == "text_completion" and c["id"] == chunks[0]["id"] and c["model"] == MODEL
        assert c["id"].startswith("cmpl-")
    return chunks


def per_index(chunks: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for c in chunks:
        for ch in c["choices"]:
            assert set(ch) == {"index", "text", "logprobs", "finish_reason"}
            out.setdefault(ch["index"], []).append(ch)
    for chs in out.values():
        assert [ch["finish_reason"] is not None for ch in chs] == [False] * (len(chs) - 1) + [True]
    return out


async def test_unary_shape(server: Server) -> None:
    server.script(reply(" there was a lighthouse.", cached=0))
    body = await unary(server, completion())
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion" and body["model"] == MODEL
    assert body["choices"] == [{"index": 0, "text": " there was a lighthouse.", "logprobs": None,
                                "finish_reason": "stop", "stop_reason": None}]
    tok = server.engine.tokenizer
    assert server.engine.requests[0].token_ids == tok.encode("Once upon a time")
    n_prompt, n_out = len(tok.encode("Once upon a time")), len(tok.encode(" there was a lighthouse."))
    assert body["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out,
                             "prompt_tokens_details": {"cached_tokens": 0}}


async def test_token_id_prompt_is_passed_as_is(server: Server) -> None:
    await unary(server, completion([11, 12, 13]))
    assert server.engine.requests[0].token_ids == [11, 12, 13]


@pytest.mark.parametrize("prompt_form", ["text", "ids"])
async def test_echo_prepends_the_prompt(server: Server, prompt_form: str) -> None:
    server.script(reply(" and more"))
    tok = server.engine.tokenizer
    prompt: Any = "Hello world" if prompt_form == "text" else tok.encode("Hello world")
    body = await unary(server, completion(prompt, echo=True))
    assert body["choices"][0]["text"] == "Hello world and more"
    (chs,) = per_index(await stream(server, completion(prompt, echo=True))).values()
    assert chs[0]["text"].startswith("Hello world")
    assert "".join(ch["text"] for ch in chs) == "Hello world and more"


@pytest.mark.parametrize("echo", [False, True])
async def test_logprobs_and_text_offsets(server: Server, echo: bool) -> None:
    server.script(reply(" and more words"))
    tok = server.engine.tokenizer
    body = await unary(server, completion("Hello world", echo=echo, logprobs=2))
    c = body["choices"][0]
    lp = c["logprobs"]
    ids = tok.encode(" and more words")
    assert lp["tokens"] == [tok.decode([t]) for t in ids]
    assert lp["token_logprobs"] == [-0.5] * len(ids)
    assert all(len(top) == 2 and top[tok_s] == -0.5 for top, tok_s in zip(lp["top_logprobs"], lp["tokens"]))
    # each offset points at that token's text inside the returned text
    for tok_s, off in zip(lp["tokens"], lp["text_offset"]):
        assert c["text"][off:off + len(tok_s)] == tok_s
    assert lp["text_offset"][0] == (len("Hello world") if echo else 0)
    chunks = await stream(server, completion("Hello world", echo=echo, logprobs=2))
    (chs,) = per_index(chunks).values()
    merged: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for ch in chs:
        for k in merged:
            merged[k] += (ch["logprobs"] or {}).get(k, [])
    assert merged == lp


async def test_prompts_times_n_choices(server: Server) -> None:
    server.script(per_choice(reply("A"), reply("B B")))
    tok = server.engine.tokenizer
    body = await unary(server, completion(["first prompt", "the second prompt"], n=2))
    assert [(c["index"], c["text"]) for c in body["choices"]] == [(0, "A"), (1, "B B"), (2, "A"), (3, "B B")]
    assert body["usage"]["prompt_tokens"] == len(tok.encode("first prompt")) + len(tok.encode("the second prompt"))
    assert body["usage"]["completion_tokens"] == 2 * (len(tok.encode("A")) + len(tok.encode("B B")))
    seen = sorted((tok.decode(r.token_ids), r.choice_index) for r in server.engine.requests)
    assert seen == [("first prompt", 0), ("first prompt", 1), ("the second prompt", 0), ("the second prompt", 1)]
    by_index = per_index(await stream(server, completion(["first prompt", "the second prompt"], n=2)))
    assert {i: "".join(ch["text"] for ch in chs) for i, chs in by_index.items()} == {0: "A", 1: "B B", 2: "A",
                                                                                    3: "B B"}


async def test_batch_of_token_id_prompts(server: Server) -> None:
    body = await unary(server, completion([[5, 6], [7, 8, 9]], max_tokens=2))
    assert len(body["choices"]) == 2 and body["usage"]["prompt_tokens"] == 5
    assert sorted(r.token_ids for r in server.engine.requests) == [[5, 6], [7, 8, 9]]


async def test_stop_string(server: Server) -> None:
    server.script(reply(" one two STOP three"))
    c = (await unary(server, completion(stop=["STOP"])))["choices"][0]
    assert (c["text"], c["finish_reason"], c["stop_reason"]) == (" one two ", "stop", "STOP")
    (chs,) = per_index(await stream(server, completion(stop="STOP"))).values()
    assert "".join(ch["text"] for ch in chs) == " one two " and chs[-1]["finish_reason"] == "stop"


async def test_stream_usage_chunk(server: Server) -> None:
    server.script(reply(" once"))
    chunks = await stream(server, completion(stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == (await unary(server, completion()))["usage"]
    assert all("usage" not in c for c in chunks[:-1])
    chunks = await stream(server, completion())
    assert all("usage" not in c for c in chunks)


async def test_min_tokens_reaches_the_engine(server: Server) -> None:
    await unary(server, completion(min_tokens=3))
    assert server.engine.requests[0].stop.min_tokens == 3


async def test_stop_strings_wait_for_min_tokens(server: Server) -> None:
    server.script(reply(" one STOP two three four five six seven"))
    tok = server.engine.tokenizer
    c = (await unary(server, completion(stop=["STOP"], min_tokens=8)))["choices"][0]
    assert len(tok.encode(c["text"])) >= 8


async def test_eos_has_no_stop_reason_and_a_stop_token_has_its_id(server: Server) -> None:
    eos = server.engine.args.eos_token_ids[0]
    server.script(reply(" done", stop_token_id=eos))
    c = (await unary(server, completion(stop_token_ids=[eos, 7])))["choices"][0]
    assert (c["finish_reason"], c["stop_reason"]) == ("stop", None)  # vLLM: EOS is checked first
    server.script(reply(" done", stop_token_id=7))
    c = (await unary(server, completion(stop_token_ids=[eos, 7])))["choices"][0]
    assert (c["finish_reason"], c["stop_reason"]) == ("stop", 7)
