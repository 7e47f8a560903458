"""LoRA adapters on one vLLM instance: the loaded set (name -> LoRARequest), their in-flight requests, and a check
of an adapter's weight shapes against the base model's (vLLM loads and serves an adapter made for a model of other
sizes without a word)."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Any

def lora_flags(extra_args: list[str]) -> list[str]:
    """vLLM's LoRA settings among the pass-through arguments (--max-loras, --max-lora-rank, --max-cpu-loras,
    --lora-dtype, ...): vLLM ignores them without --enable-lora. `--no-...` switches turn something off."""
    names = [a.split("=", 1)[0] for a in extra_args if a.startswith("--")]
    return [n for n in names if "lora" in n and not n.startswith("--no-") and n != "--enable-lora"]


def _shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (no tensor is read)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def _model_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Every weight's shape of a Hugging Face safetensors checkpoint (one file or shards); {} if there is none."""
    out: dict[str, list[int]] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(_shapes(f))
    return out


def adapter_mismatch(adapter_dir: str, model_dir: str) -> str | None:
    """Why the adapter's weights cannot apply to the base model (a lora_A whose input width or a lora_B whose output
    width differs from the base weight it adapts), or None. Only what both checkpoints show is compared: weights
    stored otherwise than as safetensors, or under names the base checkpoint does not use, are left to vLLM."""
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    base = _model_shapes(Path(model_dir))
    if not base:
        return None
    for key, shape in _shapes(weights).items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not key.endswith(part) or len(shape) != 2:
                continue
            module = key[: -len(part)].removeprefix("base_model.model.")
            target = base.get(module + ".weight")
            if target is None or len(target) != 2:
                continue
            if shape[dim] != target[dim]:
                side = "input" if dim == 1 else "output"
                return (f"{module}: the adapter's {side} width is {shape[dim]}, the base model's is {target[dim]} "
                        f"(an adapter of another base model)")
    return None


class LoraSet:
    """The adapters this instance serves by name, and how many requests use each (an unload waits for them)."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}  # name -> vllm LoRARequest
        self._locks: dict[str, asyncio.Lock] = {}
        self._busy: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def lock(self, name: str) -> asyncio.Lock:
        """Serialises loads and unloads of one name."""
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    def by_id(self, lora_id: int) -> str | None:
        return next((n for n, r in self.loaded.items() if r.lora_int_id == lora_id), None)

    def acquire(self, name: str) -> Any:
        """The adapter's LoRARequest for one request (release it when the request ends); None if not loaded."""
        req = self.loaded.get(name)
        if req is None:
            return None
        self._busy[name] = self._busy.get(name, 0) + 1
        idle = self._idle.get(name)
        if idle is None:
            idle = self._idle[name] = asyncio.Event()
        idle.clear()
        return req

    def release(self, name: str) -> None:
        left = self._busy.get(name, 0) - 1
        if left > 0:
            self._busy[name] = left
            return
        self._busy.pop(name, None)
        idle = self._idle.pop(name, None)
        if idle is not None:
            idle.set()

    def in_flight(self, name: str) -> int:
        return self._busy.get(name, 0)

    async def drained(self, name: str) -> None:
        """Returns once no request uses the adapter."""
        idle = self._idle.get(name)
        if idle is not None:
            await idle.wait()
