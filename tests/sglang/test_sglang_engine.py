"""SglangEngine over the fake sglang 0.5.23, in-process: card, priority direction, refusals, abort frees the request;
and `dynamo-mono plugins` / `serve --help` with the plugin installed but SGLang missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynamo_mono.api import EngineArgs, EngineError
from dynamo_mono.engine import EngineRequest, MediaItem, SamplingParams, StopConditions

from tests.sglang.conftest import FAKE, PLUGIN, ROOT


def _engine(**options):
    from dynamo_mono.api import TINY_CHATML_DIR
    from dynamo_mono_sglang.engine import SglangEngine

    opts = {"page_size": 16, "dp_size": 2, "max_total_tokens": 2048, "sglang_kv_events": False, **options}
    return SglangEngine(EngineArgs(model_path=str(TINY_CHATML_DIR), served_model_name="m", instance_id=0,
                                   max_model_len=1024, eos_token_ids=[2], vocab_size=2636, options=opts))


def _req(rid: str = "r", **kw) -> EngineRequest:
    return EngineRequest(request_id=rid, token_ids=list(range(10, 60)), sampling=SamplingParams(),
                         stop=kw.pop("stop", StopConditions(max_tokens=6, ignore_eos=True)), **kw)


async def test_card_and_priority_direction() -> None:
    eng = _engine(enable_priority_scheduling=True)
    await eng.start()
    try:
        card = eng.model_card()
        assert (card.block_size, card.dp_size, card.total_kv_blocks, card.max_model_len) == (16, 2, 128, 1024)
        assert card.supports_priority and card.priority_higher_is_urgent  # SGLang's default direction
        assert card.modalities == ["text"] and not card.supports_lora
    finally:
        await eng.stop()
    eng = _engine(enable_priority_scheduling=True, schedule_low_priority_values_first=True)
    await eng.start()
    try:
        assert eng.model_card().priority_higher_is_urgent is False
    finally:
        await eng.stop()


async def test_generate_pins_dp_rank_and_finishes() -> None:
    eng = _engine()
    await eng.start()
    try:
        outs = [o async for o in eng.generate(_req(dp_rank=1))]
        assert sum(len(o.token_ids) for o in outs) == 6 and outs[-1].finish_reason == "length"
        assert outs[0].prompt_tokens == 50
    finally:
        await eng.stop()


async def test_media_lora_and_conflicting_stops_are_refused() -> None:
    import numpy as np

    eng = _engine()
    await eng.start()
    try:
        item = MediaItem("image", np.zeros((2, 2, 3), np.uint8), "0" * 64, 0, 0, 1)
        for req, match in ((_req(media=[item]), "media"), (_req(lora_name="a"), "LoRA"),
                           (_req(stop=StopConditions(max_tokens=4, ignore_eos=True, stop_token_ids=[9])), "ignore_eos")):
            with pytest.raises(EngineError, match=match) as info:
                async for _ in eng.generate(req):
                    pass
            assert info.value.retryable is False
    finally:
        await eng.stop()


async def test_closing_the_stream_aborts_the_sglang_request() -> None:
    eng = _engine()
    await eng.start()
    try:
        gen = eng.generate(_req("long", stop=StopConditions(max_tokens=900, ignore_eos=True)))
        await gen.__anext__()
        await eng.loads.refresh(eng.engine.tokenizer_manager)
        assert sum(m.running for m in eng.load_metrics()) == 1
        await gen.aclose()
        import asyncio

        for _ in range(3000):  # hang guard only: the abort lands on the fake scheduler's next step
            await eng.loads.refresh(eng.engine.tokenizer_manager)
            if sum(m.running + m.waiting for m in eng.load_metrics()) == 0:
                break
            await asyncio.sleep(0.01)
        assert sum(m.running + m.waiting + m.kv_active_blocks for m in eng.load_metrics()) == 0
    finally:
        await eng.stop()


def _cli(args: list[str], pythonpath: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    return subprocess.run([sys.executable, "-m", "dynamo_mono.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_plugins_lists_sglang_unavailable_with_install_hint() -> None:
    # the plugin installed (its entry point) but no sglang: what a CPU machine shows
    r = _cli(["plugins"], [str(PLUGIN), str(ROOT)])
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("engine") and " sglang " in ln)
    assert "unavailable: missing sglang" in line and "install: pip install 'sglang==0.5.23'" in line
    r = _cli(["serve", "--engine", "sglang", "--help"], [str(PLUGIN), str(ROOT)])
    assert r.returncode == 0
    for flag in ("--page-size", "--dp-size", "--enable-priority-scheduling", "--schedule-low-priority-values-first",
                 "--max-total-tokens", "--sglang-kv-events"):
        assert flag in r.stdout
