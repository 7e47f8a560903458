"""Connectors carry the planner's targets out: local (start / drain engine instances in this process), command (an
operator's program: Kubernetes, Slurm, ...) and dry-run (only report)."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from dataclasses import replace
from typing import Any, Protocol

from dynamo_mono.model_spec import ModelSpec
from dynamo_mono.planner.config import AGG
from dynamo_mono.serving.launch import start_engines, stop_all
from dynamo_mono.serving.model import ServedModel
from dynamo_mono.serving.pool import Instance

log = logging.getLogger("dynamo_mono.planner")


def serving_count(model: ServedModel, role: str) -> int:
    """Instances of `role` the model routes to now (local or remote, draining ones excluded)."""
    return sum(1 for i in model.pool.instances.values() if i.role == role and not i.draining)


class Connector(Protocol):
    def running(self, role: str) -> int: ...

    async def apply(self, targets: dict[str, int], reason: str) -> None:
        """Bring each role to its target (returns once scale-ups serve; drains go on in the background)."""

    async def close(self) -> None: ...


class DryRunConnector:
    """Logs the targets and changes nothing (Dynamo's --no-operation)."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model

    def running(self, role: str) -> int:
        return serving_count(self.model, role)

    async def apply(self, targets: dict[str, int], reason: str) -> None:
        log.info("planner (dry-run) model %s: would scale to %s: %s", self.model.name, targets, reason)

    async def close(self) -> None:
        pass


class CommandConnector:
    """Runs `CMD MODEL ROLE=COUNT...` with DYN_PLANNER_MODEL, DYN_PLANNER_TARGET_<ROLE> and DYN_PLANNER_REASON in
    its environment; exit status 0 = done. The instances it brings join as remote workers, so `running` counts what
    actually serves."""

    def __init__(self, model: ServedModel, command: str, timeout: float) -> None:
        self.model = model
        self.argv = shlex.split(command)
        self.timeout = timeout
        self.failures = 0

    def running(self, role: str) -> int:
        return serving_count(self.model, role)

    async def apply(self, targets: dict[str, int], reason: str) -> None:
        argv = [*self.argv, self.model.name, *(f"{r}={n}" for r, n in targets.items())]
        env = dict(os.environ, DYN_PLANNER_MODEL=self.model.name, DYN_PLANNER_REASON=reason,
                   **{f"DYN_PLANNER_TARGET_{r.upper()}": str(n) for r, n in targets.items()})
        try:
            proc = await asyncio.create_subprocess_exec(*argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            self.failures += 1
            log.error("planner command %s could not start: %s", shlex.join(argv), exc)
            return
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            self.failures += 1
            log.error("planner command %s killed after %.0fs", shlex.join(argv), self.timeout)
            return
        text = out.decode(errors="replace").strip()[-2000:]
        if proc.returncode != 0:
            self.failures += 1
            log.error("planner command %s failed (exit %s): %s", shlex.join(argv), proc.returncode, text)
        else:
            log.info("planner command %s done%s", shlex.join(argv), f": {text}" if text else "")

    async def close(self) -> None:
        pass


class LocalConnector:
    """Starts instances of the served model in this process and drains them on scale-down: a draining instance
    takes no new request, finishes those it has (up to drain_timeout; any left then fail over per
    --migration-limit), then leaves the pool and stops. In disaggregated mode new instances get the engine option
    disaggregation_mode = their role."""

    def __init__(self, state: Any, model: ServedModel, reg: Any, spec: ModelSpec, drain_timeout: float,
                 on_change: Any = None) -> None:
        self.state = state
        self.model = model
        self.reg = reg
        self.spec = spec
        self.drain_timeout = drain_timeout
        self.on_change = on_change  # called after instances join or leave (gauges)
        self.draining: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    def running(self, role: str) -> int:
        return serving_count(self.model, role)

    async def apply(self, targets: dict[str, int], reason: str) -> None:
        async with self._lock:
            for role, target in targets.items():
                have = self.running(role)
                if target > have:
                    await self._start(role, target - have)
                elif target < have:
                    self._drain(role, have - target)

    async def _start(self, role: str, n: int) -> None:
        options = dict(self.spec.engine_options)
        if role != AGG:
            options["disaggregation_mode"] = role
        spec = replace(self.spec, instances=n, engine_options=options)
        ids = [self.state.new_worker_id() for _ in range(n)]  # contiguous (no await in between): instance_id = id
        t0 = time.monotonic()
        engines = await start_engines(self.reg, spec, self.model.info, first_id=ids[0])
        for wid, engine in zip(ids, engines):
            self.model.add_instance(Instance(worker_id=wid, engine=engine, card=engine.model_card()))
        log.info("planner model %s: started %d %s instance(s) %s in %.1fs", self.model.name, n, role, ids,
                 time.monotonic() - t0)
        self._changed()

    def _drain(self, role: str, n: int) -> None:
        load = self.model.pool.router.load()
        # Local instances of the role, fewest active requests first (they drain soonest), newest first on ties.
        local = [i for i in self.model.pool.instances.values() if i.local and i.role == role and not i.draining]
        local.sort(key=lambda i: (sum(load.get(k, {}).get("active_requests", 0) for k in i.keys()), -i.worker_id))
        for inst in local[:n]:
            inst.draining = True
            log.info("planner model %s: draining instance %s (%s) with %d request(s) in flight", self.model.name,
                     inst.worker_id, role, self.active_requests(inst))
            task = asyncio.get_running_loop().create_task(self._finish_drain(inst))
            self.draining.add(task)
            task.add_done_callback(self.draining.discard)
        if len(local) < n:
            log.warning("planner model %s: asked to remove %d %s instance(s), only %d are local", self.model.name, n,
                        role, len(local))
        self._changed()

    def active_requests(self, inst: Instance) -> int:
        load = self.model.pool.router.load()
        return sum(load.get(k, {}).get("active_requests", 0) for k in inst.keys())

    async def _finish_drain(self, inst: Instance) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.drain_timeout
        router = self.model.pool.router
        while self.active_requests(inst) > 0 and time.monotonic() < deadline:
            try:  # resolved at the router's next load drop (a finish, a prefill done)
                await asyncio.wait_for(router.wait_for_capacity(), timeout=min(1.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        left = self.active_requests(inst)
        if left:
            log.warning("planner model %s: instance %s still has %d request(s) after %.0fs of draining; stopping it "
                        "(they migrate per --migration-limit)", self.model.name, inst.worker_id, left,
                        self.drain_timeout)
        await stop_all([inst.engine])  # before leaving the pool: a request cut off fails over to another instance
        self.model.pool.remove(inst.worker_id)
        log.info("planner model %s: instance %s (%s) drained and stopped in %.1fs", self.model.name, inst.worker_id,
                 inst.role, time.monotonic() - t0)
        self._changed()

    async def idle(self) -> None:
        """Wait for every drain under way to end (tests, shutdown)."""
        while self.draining:
            await asyncio.gather(*list(self.draining), return_exceptions=True)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def close(self) -> None:
        for task in list(self.draining):
            task.cancel()
        await asyncio.gather(*list(self.draining), return_exceptions=True)


def make_connector(name: str, state: Any, model: ServedModel, *, reg: Any = None, spec: ModelSpec | None = None,
                   command: str | None = None, command_timeout: float = 300.0, drain_timeout: float = 120.0,
                   on_change: Any = None) -> Connector:
    if name == "local":
        assert reg is not None and spec is not None
        return LocalConnector(state, model, reg, spec, drain_timeout, on_change)
    if name == "command":
        assert command
        return CommandConnector(model, command, command_timeout)
    if name == "dry-run":
        return DryRunConnector(model)
    raise ValueError(f"unknown planner connector {name!r}")
