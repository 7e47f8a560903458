"""An adapter as a served model: the parent's tokenizer, template and instances, routed within its replica set."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from dynamo_mono.block_hash import lora_seed
from dynamo_mono.engine import EngineOutput, EngineRequest, InstanceKey
from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.pool import InstancePool


class LoraPool(InstancePool):
    """A view of the parent's pool: same router (KV index, load) and instances, restricted to the keys the
    adapter is loaded on; counts the adapter's requests in flight (the load estimator samples `active`, an
    unload waits for it to reach 0)."""

    def __init__(self, parent: InstancePool, lora_name: str) -> None:
        # Not InstancePool.__init__: it would take over the router's resync callback.
        self.model = lora_name
        self.parent_pool = parent
        self.router = parent.router
        self.migration_limit = parent.migration_limit
        self.queue_timeout = parent.queue_timeout
        self.metrics = parent.metrics
        self.instances = parent.instances  # the same dict: joins and leaves show at once
        self.queued = 0
        self.conditional_disagg = parent.conditional_disagg
        self.disagg_min_prefill_tokens = parent.disagg_min_prefill_tokens
        self.disagg_prefill_timeout = parent.disagg_prefill_timeout
        self.keys: frozenset[InstanceKey] = frozenset()  # the replica set the adapter is loaded on
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, instance) -> None:  # membership belongs to the parent pool
        self.parent_pool.add(instance)

    def remove(self, worker_id: int):
        return self.parent_pool.remove(worker_id)

    def _candidates(self, worker_id: int | None, dp_rank: int | None):
        workers = {k[0] for k in self.keys}
        if worker_id is not None and worker_id in self.instances and worker_id not in workers:
            raise InvalidRequest(f"adapter '{self.model}' is not loaded on instance {worker_id}; it is on "
                                 f"{sorted(workers)}", param="nvext.backend_instance_id")
        return [i for i in super()._candidates(worker_id, dp_rank) if i.worker_id in workers]

    def _allowed(self, worker_id: int | None, dp_rank: int | None, n: int):
        pinned, allowed = super()._allowed(worker_id, dp_rank, n)
        keys = self.keys
        allowed = [k for k in allowed if k in keys]
        return (pinned if pinned in keys else None), allowed

    def serving_instances(self):
        workers = {k[0] for k in self.keys}
        return [i for i in self.instances.values() if i.worker_id in workers]

    def ready_instances(self):
        workers = {k[0] for k in self.keys}
        return [i for i in super().ready_instances() if i.worker_id in workers]

    async def generate(self, req: EngineRequest) -> AsyncIterator[EngineOutput]:
        self.active += 1
        self._idle.clear()
        try:
            async for out in super().generate(req):
                yield out
        finally:
            self.active -= 1
            if self.active == 0:
                self._idle.set()

    async def _prefill_remotely(self, req: EngineRequest):
        # Prefill instances are not in adapters' replica sets: an adapter's request prefills where it decodes.
        return None

    async def wait_idle(self) -> None:
        """Until no request of the adapter is in flight."""
        await self._idle.wait()


class LoraModel(ServedModel):
    """Adapter `lora_name` of chat model `parent`: requests naming it generate with EngineRequest.lora_name set,
    hash their blocks with lora_seed(lora_name) and go to the parent's instances in the adapter's replica set."""

    def __init__(self, lora_name: str, parent: ServedModel) -> None:
        super().__init__(lora_name, parent.info, LoraPool(parent.pool, lora_name), kind="chat", configured=True,
                         reasoning_parser=parent.explicit_reasoning_parser,
                         tool_call_parser=parent.explicit_tool_call_parser, admission=parent.admission)
        self.lora_name = lora_name
        self.parent = parent
        self.hash_seed = lora_seed(lora_name)

    def add_instance(self, instance) -> None:
        self.parent.add_instance(instance)
