"""Fixtures of the diffusers plugin tests: skip without torch / diffusers, the tiny pipelines built once, generators."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
HINT = ("pip install 'diffusers==0.42.*' accelerate ftfy -e plugins/diffusers (torch from your platform's wheel; "
        "tests/setup.sh does it)")
HAVE_DEPS = all(importlib.util.find_spec(m) is not None for m in ("torch", "diffusers", "transformers"))
if HAVE_DEPS and importlib.util.find_spec("dynamo_mono_diffusers") is None:
    sys.path.insert(0, str(ROOT / "plugins" / "diffusers"))  # the plugin's code without installing it


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.diffusers)
            if not HAVE_DEPS:
                item.add_marker(pytest.mark.skip(reason=f"needs torch, diffusers and transformers: {HINT}"))


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the tiny models are dominated by per-op overhead, which more threads only add to."""
    if not HAVE_DEPS:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny pipeline of dynamo_mono_diffusers.tiny_pipelines, saved once per session: name -> directory."""
    from dynamo_mono_diffusers.tiny_pipelines import build_tiny_pipelines

    return build_tiny_pipelines(tmp_path_factory.mktemp("tiny-pipelines"))


def engine_args(path: Path | str, kind: str, **options: Any) -> Any:
    """EngineArgs as the server builds them for a media model: the plugin's option defaults plus `options`."""
    from dynamo_mono.config import defaults
    from dynamo_mono.engine import EngineArgs
    from dynamo_mono_diffusers.options import DIFFUSERS_OPTIONS

    opts = defaults(DIFFUSERS_OPTIONS).as_dict()
    opts.update(options)
    return EngineArgs(model_path=str(path), served_model_name="tiny", instance_id=0, max_model_len=0,
                      eos_token_ids=[], vocab_size=0, options=opts, kind=kind)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """started(path, kind, **options) -> a started generator (built by the plugin's factory), stopped afterwards."""
    from dynamo_mono_diffusers.plugin import create_generator

    made: list[Any] = []

    async def start(path: Path | str, kind: str, **options: Any) -> Any:
        gen = create_generator(engine_args(path, kind, **options))
        made.append(gen)
        await gen.start()
        return gen

    yield start
    for gen in made:
        await gen.stop()


class Gate:
    """A forward pre-hook on a pipeline's denoiser: counts its calls and holds call `block_at` (1-based) on the
    worker thread until release() (a hang guard of 60 s)."""

    def __init__(self, pipe: Any, block_at: int | None = 1) -> None:
        self.calls = 0
        self.block_at = block_at
        self.entered = threading.Event()
        self._open = threading.Event()
        denoiser = getattr(pipe, "transformer", None) or pipe.unet
        self._handle = denoiser.register_forward_pre_hook(self._hook)

    def _hook(self, module: Any, args: Any) -> None:
        self.calls += 1
        if self.calls == self.block_at:
            self.entered.set()
            self._open.wait(60)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 60), "the pipeline never reached the gate"

    def release(self) -> None:
        self._open.set()

    def remove(self) -> None:
        self._open.set()
        self._handle.remove()


async def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait for a state (polling; the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
