"""The planner of one served model: a throughput tick every --adjustment-interval and, when enabled, a load tick
every --load-adjustment-interval; each decision goes to the connector and is logged with its reason."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from dynamo_mono.planner.config import AGG, DECODE, PREFILL, PlannerConfig
from dynamo_mono.planner.connectors import Connector
from dynamo_mono.planner.interpolation import DecodeProfile, PrefillProfile
from dynamo_mono.planner.load_scaler import LoadRegression, LoadVerdict, combine, judge
from dynamo_mono.planner.metrics import PlannerMetrics
from dynamo_mono.planner.observe import FrontendObserver
from dynamo_mono.planner.predictors import make_predictor
from dynamo_mono.planner.throughput import Decision, Observation, Prediction, ThroughputScaler
from dynamo_mono.serving.model import ServedModel

log = logging.getLogger("dynamo_mono.planner")


@dataclass(frozen=True)
class InstanceLoadSample:
    """One instance's load as the router counts it (summed over its dp ranks)."""

    prefill_tokens: float
    decode_blocks: float


@dataclass
class DecisionRecord:
    at: float
    kind: str  # throughput | load | start
    targets: dict[str, int]
    reason: str


@dataclass
class _Regressions:
    ttft: LoadRegression
    itl: LoadRegression


@dataclass
class PlannerState:
    targets: dict[str, int] = field(default_factory=dict)
    floors: dict[str, int] = field(default_factory=dict)  # throughput targets when load scaling is on
    decisions: list[DecisionRecord] = field(default_factory=list)


class Planner:
    """Decides instance counts per role for `model` and hands them to `connector`."""

    MAX_RECORDS = 1000

    def __init__(self, config: PlannerConfig, model: ServedModel, connector: Connector, metrics: PlannerMetrics,
                 observer: FrontendObserver, load_observer: FrontendObserver,
                 profiles: tuple[PrefillProfile, DecodeProfile] | None) -> None:
        self.config = config
        self.model = model
        self.connector = connector
        self.metrics = metrics
        self.observer = observer
        self.load_observer = load_observer
        self.scaler = ThroughputScaler(config, *profiles) if profiles is not None else None
        kw = dict(q_level=config.kalman_q_level, q_trend=config.kalman_q_trend, r=config.kalman_r,
                  min_points=config.kalman_min_points)
        self.num_req = make_predictor(config.load_predictor, **kw)
        self.isl = make_predictor(config.load_predictor, **kw)
        self.osl = make_predictor(config.load_predictor, **kw)
        self.regressions = {r: _Regressions(LoadRegression(config.load_learning_window, config.load_min_observations),
                                            LoadRegression(config.load_learning_window, config.load_min_observations))
                            for r in config.roles}
        self.state = PlannerState(targets={r: connector.running(r) for r in config.roles},
                                  floors={r: config.min_instances for r in config.roles})
        self._last_isl: float | None = None
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()

    # --- decisions ---------------------------------------------------------------------------------------------
    async def ensure_bounds(self) -> None:
        """Bring every role into [--min-instances, --max-instances] (at start)."""
        cfg = self.config
        targets = {r: max(cfg.min_instances, min(cfg.max_instances, self.connector.running(r))) for r in cfg.roles}
        if self.scaler is not None:
            targets = self.scaler.clamp(targets)
        await self._apply("start", targets, f"bounds [{cfg.min_instances}, {cfg.max_instances}] per role")

    async def tick(self) -> Decision | None:
        """One throughput-based decision over the interval since the previous tick (also the tests' hook)."""
        obs = await self.observer.observe()
        self._export_observation(obs)
        if self.scaler is None:
            return None
        self.num_req.add(obs.num_req)
        if obs.num_req > 0 and obs.isl is not None and obs.osl is not None:
            self.isl.add(obs.isl)
            self.osl.add(obs.osl)
            self._last_isl = obs.isl
        decode_role = DECODE if self.config.mode == "disagg" else AGG
        self.scaler.update_corrections(obs, self.connector.running(decode_role))
        n, isl, osl = self.num_req.predict(), self.isl.predict(), self.osl.predict()
        if n is None or isl is None or osl is None:
            log.info("planner model %s: no request finished yet; keeping %s", self.model.name, self.state.targets)
            return None
        self.metrics.predicted_requests.set(n)
        self.metrics.predicted_isl.set(isl)
        self.metrics.predicted_osl.set(osl)
        decision = self.scaler.decide(Prediction(n, isl, osl), obs.duration_s)
        if self.config.enable_load_scaling:
            # The throughput target is the load scaler's floor; it raises instances now, never lowers them.
            self.state.floors = dict(decision.targets)
            targets = {r: max(t, self.state.targets.get(r, 0)) for r, t in decision.targets.items()}
            decision.reason += "; floor for load-based scaling"
        else:
            targets = decision.targets
        await self._apply("throughput", targets, decision.reason)
        return decision

    def sample_loads(self) -> dict[str, list[InstanceLoadSample]]:
        """Per role, the router's current load of each instance that serves (not draining)."""
        load = self.model.pool.router.load()
        out: dict[str, list[InstanceLoadSample]] = {r: [] for r in self.config.roles}
        for inst in self.model.pool.instances.values():
            if inst.draining or inst.role not in out:
                continue
            ks = [load.get(k, {}) for k in inst.keys()]
            out[inst.role].append(InstanceLoadSample(sum(x.get("active_prefill_tokens", 0) for x in ks),
                                                     sum(x.get("active_decode_blocks", 0) for x in ks)))
        return out

    async def load_tick(self, loads: dict[str, list[InstanceLoadSample]] | None = None) -> dict[str, LoadVerdict]:
        """One load-based decision from per-instance loads (averaged over the interval's samples by the loop;
        sampled now when not given) and the latencies observed since the previous load tick."""
        loads = self.sample_loads() if loads is None else loads
        obs = await self.load_observer.observe()
        if obs.isl is not None:
            self._last_isl = obs.isl
        isl = self._last_isl or 0.0
        cfg = self.config
        verdicts: dict[str, LoadVerdict] = {}
        targets = dict(self.state.targets)
        for role in cfg.roles:
            insts = loads.get(role, [])
            reg = self.regressions[role]
            ttft_x = [s.prefill_tokens + isl for s in insts]
            itl_x = [s.decode_blocks for s in insts]
            if insts and obs.ttft_ms is not None and role != DECODE:
                reg.ttft.add(sum(ttft_x) / len(ttft_x), obs.ttft_ms)
            if insts and obs.itl_ms is not None and role != PREFILL:
                reg.itl.add(sum(itl_x) / len(itl_x), obs.itl_ms)
            sens = cfg.load_scaling_down_sensitivity
            v_ttft = judge(ttft_x, self._ttft_max_load(reg.ttft), sens, "TTFT vs queued prefill tokens + ISL")
            v_itl = judge(itl_x, reg.itl.max_load(cfg.itl_ms), sens, "ITL vs active decode blocks")
            verdict = v_ttft if role == PREFILL else v_itl if role == DECODE else combine(v_ttft, v_itl)
            verdicts[role] = verdict
            if verdict.delta:
                floor = self.state.floors.get(role, cfg.min_instances)
                targets[role] = max(floor, cfg.min_instances, min(cfg.max_instances, targets[role] + verdict.delta))
        if targets != self.state.targets:
            if self.scaler is not None:
                targets = self.scaler.clamp(targets)
            reason = "; ".join(f"{r}: {v.reason}" for r, v in verdicts.items() if v.delta)
            await self._apply("load", targets, reason)
        return verdicts

    def _ttft_max_load(self, reg: LoadRegression) -> float | None:
        """Queued prefill tokens (+ ISL) per instance that still meet --ttft: the regression's answer, capped by the
        profile's (the tokens one instance prefills within the target), which also stands in until the regression
        has learned; the lower of the two, as a regression fitted on lagging, noisy windows can overshoot."""
        learned = reg.max_load(self.config.ttft_ms)
        if self.scaler is None:
            return learned
        bound = self.scaler.prefill.tokens_within(self.config.ttft_ms)
        return bound if learned is None else min(learned, bound)

    async def _apply(self, kind: str, targets: dict[str, int], reason: str) -> None:
        async with self._lock:
            before = {r: self.connector.running(r) for r in targets}
            self.state.targets = dict(targets)
            for r, n in targets.items():
                self.metrics.target(r, n)
            self.state.decisions.append(DecisionRecord(time.time(), kind, dict(targets), reason))
            del self.state.decisions[:-self.MAX_RECORDS]
            verb = "scale" if targets != before else "keep"
            log.info("planner model %s: %s decision: %s %s -> %s: %s", self.model.name, kind, verb, before, targets,
                     reason)
            await self.connector.apply(targets, reason)
            self.export_instances()

    def export_instances(self) -> None:
        """Instances running per role: serving ones plus those still draining (they hold their GPUs)."""
        for r in self.config.roles:
            draining = sum(1 for i in self.model.pool.instances.values() if i.role == r and i.draining)
            self.metrics.instances(r, self.connector.running(r) + draining)

    def _export_observation(self, obs: Observation) -> None:
        if obs.ttft_ms is not None:
            self.metrics.observed_ttft_ms.set(obs.ttft_ms)
        if obs.itl_ms is not None:
            self.metrics.observed_itl_ms.set(obs.itl_ms)

    # --- loops -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.config.enable_throughput_scaling:
            self._tasks.append(loop.create_task(self._throughput_loop()))
        if self.config.enable_load_scaling:
            self._tasks.append(loop.create_task(self._load_loop()))

    async def _throughput_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.adjustment_interval)
            await self._guard(self.tick)

    async def _load_loop(self) -> None:
        cfg = self.config
        every = cfg.load_adjustment_interval / cfg.load_metric_samples
        while True:
            sums: dict[int, list[float]] = {}
            roles: dict[int, str] = {}
            for _ in range(cfg.load_metric_samples):
                await asyncio.sleep(every)
                # average each instance's load over the interval (instances that left are dropped)
                present = {}
                for inst in self.model.pool.instances.values():
                    if not inst.draining and inst.role in cfg.roles:
                        present[inst.worker_id] = inst.role
                snap = self.model.pool.router.load()
                for wid, role in present.items():
                    ks = [snap.get((wid, r), {}) for r in range(self.model.pool.instances[wid].card.dp_size)]
                    acc = sums.setdefault(wid, [0.0, 0.0, 0.0])
                    acc[0] += sum(x.get("active_prefill_tokens", 0) for x in ks)
                    acc[1] += sum(x.get("active_decode_blocks", 0) for x in ks)
                    acc[2] += 1
                    roles[wid] = role
                for left in set(sums) - set(present):  # instances that left: dropped
                    del sums[left]
            loads: dict[str, list[InstanceLoadSample]] = {r: [] for r in cfg.roles}
            for wid, (p, d, k) in sums.items():
                loads[roles[wid]].append(InstanceLoadSample(p / k, d / k))
            await self._guard(lambda: self.load_tick(loads))

    async def _guard(self, fn) -> None:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed decision must not end the planner
            log.exception("planner model %s: decision failed", self.model.name)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.connector.close()
