"""The adapters a server serves: load / unload on their replica sets, placement upkeep and load-based scaling.

Loading is idempotent per name (a per-name lock: concurrent loads of one name load once). A failed load on
one instance unloads it from the instances that took it; nothing is registered. Unloading takes the adapter out
of routing at once (new requests get 404), then WAITS for its in-flight requests to finish (bounded by
--request-timeout) before the engines forget it: a client never sees a stream cut by an unload.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from dynamo_mono.engine import EngineError, InstanceKey, LoraAdapter
from dynamo_mono.lora.estimator import LoadEstimator, ScalePolicy
from dynamo_mono.lora.ids import lora_id
from dynamo_mono.lora.model import LoraModel
from dynamo_mono.lora.placement import replica_set
from dynamo_mono.lora.source import check_adapter, local_path
from dynamo_mono.serving.errors import EngineFailed, InvalidRequest, ModelNotFound
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.pool import Instance

log = logging.getLogger("dynamo_mono.lora")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,255}$")


@dataclass
class Adapter:
    """One served adapter: its id and files, its model, replica factor and the instances it is loaded on."""

    name: str
    lora_id: int
    path: str
    model: LoraModel
    factor: int
    loaded: set[int] = field(default_factory=set)

    @property
    def parent(self) -> ServedModel:
        return self.model.parent  # type: ignore[return-value]


class LoraManager:
    """Owns every adapter of the server (state.loras)."""

    def __init__(self, state: Any) -> None:
        s = state.settings
        self.state = state
        self.adapters: dict[str, Adapter] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.base_factor: int = s.lora_replica_factor
        self.estimator = LoadEstimator(ScalePolicy(
            base=s.lora_replica_factor, maximum=s.lora_max_replica_factor, up=s.lora_scale_up_active,
            down=s.lora_scale_down_active, window=s.lora_sample_window))
        self.interval: float = s.lora_sample_interval
        self.drain_timeout: float | None = s.request_timeout
        self.engine_loads = 0  # load_lora calls made (a test of idempotent loading counts them)
        self._task: asyncio.Task | None = None

    # --- queries ---------------------------------------------------------------------------------
    def list(self) -> dict[str, int]:
        return {a.name: a.lora_id for a in self.adapters.values()}

    def base_model(self, name: str | None) -> ServedModel:
        """The chat model an adapter is loaded onto: `name`, else the only one whose instances serve LoRA."""
        bases = [m for m in self.state.models.values()
                 if m.kind == "chat" and m.parent is None and any(i.card.supports_lora for i in m.pool.instances.values())]
        if name is not None:
            for m in bases:
                if m.name == name:
                    return m
            raise InvalidRequest(f"model '{name}' is not a served chat model whose instances serve LoRA adapters "
                                 f"(those are: {sorted(m.name for m in bases)})", param="base_model")
        if not bases:
            raise InvalidRequest("no served model's engine serves LoRA adapters (the engine's card has "
                                 "supports_lora=False)", param="lora_name")
        if len(bases) > 1:
            raise InvalidRequest(f"several models serve LoRA adapters ({sorted(m.name for m in bases)}): name one "
                                 "with base_model", param="base_model")
        return bases[0]

    def placement(self, name: str, parent: ServedModel, factor: int) -> list[InstanceKey]:
        """The adapter's replica set: HRW over the keys of the parent's LoRA-capable, non-prefill instances."""
        keys = [k for i in parent.pool.instances.values() if i.card.supports_lora and i.role != "prefill"
                for k in i.keys()]
        return replica_set(name, keys, factor)

    # --- load / unload -----------------------------------------------------------------------------
    async def load(self, name: str, source: str, base_model: str | None = None) -> tuple[Adapter, bool]:
        """The adapter (loaded now, or already): (adapter, True if this call loaded it). InvalidRequest for a bad
        name or source, EngineFailed when an engine fails; nothing stays loaded or registered on failure."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(f"invalid lora_name {name!r}: 1-256 characters of letters, digits and ._:/@+- "
                                 "starting with a letter or digit", param="lora_name")
        path = local_path(source)
        async with self._locks.setdefault(name, asyncio.Lock()):
            have = self.adapters.get(name)
            if have is not None:
                if have.path != path:
                    raise InvalidRequest(f"adapter '{name}' is already loaded from {have.path}; unload it first to "
                                         f"load it from {path}", param="lora_name")
                if base_model is not None and base_model != have.parent.name:
                    raise InvalidRequest(f"adapter '{name}' is loaded on model '{have.parent.name}'",
                                         param="base_model")
                return have, False
            if name in self.state.models:
                raise InvalidRequest(f"'{name}' is already the name of a served model", param="lora_name")
            parent = self.base_model(base_model)
            ranks = [i.card.max_lora_rank for i in parent.pool.instances.values() if i.card.max_lora_rank]
            files = check_adapter(path, max_rank=min(ranks, default=0),
                                  served_base=(parent.info.name, parent.info.path))
            adapter = Adapter(name, lora_id(name), files.path, LoraModel(name, parent), self.base_factor)
            keys = self.placement(name, parent, adapter.factor)
            if not keys:
                raise EngineFailed(f"model '{parent.name}' has no instance to load adapter '{name}' on",
                                   retryable=True)
            await self._load_on(adapter, {k[0] for k in keys}, rollback=True)
            adapter.model.pool.keys = frozenset(keys)
            self.state.add_model(adapter.model)
            self.adapters[name] = adapter
            log.info("LoRA adapter %s (id %d) loaded on instance(s) %s of %s", name, adapter.lora_id,
                     sorted(adapter.loaded), parent.name)
            return adapter, True

    async def unload(self, name: str) -> Adapter:
        """Take the adapter out of routing, wait for its in-flight requests, then unload it everywhere."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            adapter = self.adapters.pop(name, None)
            if adapter is None:
                raise ModelNotFound(f"LoRA adapter '{name}' is not loaded", param="lora_name")
            self.state.remove_model(name)
            self.estimator.forget(name)
            try:
                await asyncio.wait_for(adapter.model.pool.wait_idle(), self.drain_timeout)
            except asyncio.TimeoutError:
                log.warning("unloading adapter %s with %d request(s) still running", name, adapter.model.pool.active)
            await self._unload_from(adapter, set(adapter.loaded))
            log.info("LoRA adapter %s unloaded", name)
            return adapter

    async def _load_on(self, adapter: Adapter, workers: set[int], *, rollback: bool) -> set[int]:
        """Load on each instance in `workers`; the ones that took it. With rollback, any failure unloads it from
        the others and raises (InvalidRequest when an instance refused the files, EngineFailed otherwise)."""
        want = LoraAdapter(adapter.name, adapter.lora_id, adapter.path)
        insts = [i for w in sorted(workers) if (i := adapter.parent.pool.instances.get(w)) is not None]
        self.engine_loads += len(insts)
        results = await asyncio.gather(*(_load(i, want) for i in insts), return_exceptions=True)
        ok = {i.worker_id for i, r in zip(insts, results) if r is None}
        adapter.loaded |= ok
        failed = [(i, r) for i, r in zip(insts, results) if r is not None]
        if failed and rollback:
            await self._unload_from(adapter, ok)
            inst, exc = failed[0]
            msg = f"instance {inst.worker_id} could not load adapter '{adapter.name}': {exc}"
            if isinstance(exc, EngineError) and not exc.retryable:
                raise InvalidRequest(msg, param="source")
            raise EngineFailed(msg, retryable=False)
        for inst, exc in failed:
            log.warning("instance %s could not load adapter %s: %s", inst.worker_id, adapter.name, exc)
        return ok

    async def _unload_from(self, adapter: Adapter, workers: set[int]) -> None:
        insts = [i for w in sorted(workers) if (i := adapter.parent.pool.instances.get(w)) is not None]
        results = await asyncio.gather(*(i.engine.unload_lora(adapter.name) for i in insts), return_exceptions=True)
        for inst, r in zip(insts, results):
            if isinstance(r, BaseException):
                log.warning("instance %s could not unload adapter %s: %s", inst.worker_id, adapter.name, r)
        adapter.loaded -= workers

    # --- upkeep --------------------------------------------------------------------------------------
    async def reconcile(self) -> None:
        """One upkeep pass: sample each adapter's load, resize its replica set when the estimator says so, and
        follow instances that joined or left (HRW moves only the adapters whose top keys changed)."""
        for name in list(self.adapters):
            async with self._locks.setdefault(name, asyncio.Lock()):
                adapter = self.adapters.get(name)
                if adapter is None:
                    continue
                self._rebind(adapter)
                pool = adapter.model.pool
                self.estimator.sample(name, pool.active)
                n_keys = sum(i.card.dp_size for i in adapter.parent.pool.instances.values() if i.card.supports_lora)
                adapter.factor = self.estimator.decide(name, adapter.factor, len(pool.keys), n_keys)
                await self._place(adapter)

    def _rebind(self, adapter: Adapter) -> None:
        """A base model brought by workers leaves with its last worker and comes back as a new ServedModel when
        one rejoins: move the adapter onto the new one (its engines know nothing of the adapter yet)."""
        old = adapter.parent
        now = self.state.models.get(old.name)
        if now is old or now is None or now.kind != "chat" or now.parent is not None:
            return
        model = LoraModel(adapter.name, now)
        adapter.model = model
        adapter.loaded = set()
        self.state.models[adapter.name] = model
        log.info("adapter %s follows model %s, served anew", adapter.name, now.name)

    async def _place(self, adapter: Adapter) -> None:
        keys = self.placement(adapter.name, adapter.parent, adapter.factor)
        workers = {k[0] for k in keys}
        adapter.loaded &= set(adapter.parent.pool.instances)  # instances that left took the adapter with them
        new = workers - adapter.loaded
        if new:
            await self._load_on(adapter, new, rollback=False)
        routed = frozenset(k for k in keys if k[0] in adapter.loaded)
        if routed != adapter.model.pool.keys:
            log.info("adapter %s now routed to %s", adapter.name, sorted(routed))
            adapter.model.pool.keys = routed
        gone = adapter.loaded - workers
        if gone:
            await self._unload_from(adapter, gone)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - upkeep must outlive one bad pass
                log.exception("LoRA placement upkeep failed")


async def _load(inst: Instance, adapter: LoraAdapter) -> None:
    load = getattr(inst.engine, "load_lora", None)
    if load is None:
        raise EngineError(f"the engine of instance {inst.worker_id} does not implement load_lora", retryable=False)
    await load(adapter)


def parse_lora_modules(value: str | None) -> list[tuple[str, str]]:
    """--lora-modules: `name=path` pairs separated by whitespace or commas (ValueError naming a bad one)."""
    if not value:
        return []
    out = []
    for item in re.split(r"[\s,]+", value.strip()):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--lora-modules entry {item!r} is not NAME=PATH")
        out.append((name, path))
    return out
