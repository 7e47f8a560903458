"""KV offload tiers on the mocker: a multi-turn trace, GPU only vs + host vs + host + disk, tier-aware vs blind routing.

Each conversation re-sends its whole history (previous prompt + the model's answer + a new user message) after
a think time; the GPU pools hold far fewer blocks than all active conversations need, so between turns a
conversation's blocks are evicted from the GPU. A discrete-event simulation in virtual time drives the mocker's
own Scheduler / KvManager / TierStore and perf model (no server, no sleeps: the figures are deterministic for a
seed), and for several instances the router's KvIndexer (fed by the instances' KV events) + KvSelector.

Reported per configuration: TTFT p50 / p90 (simulated ms, arrival -> first token), prompt tokens prefilled
(computed), GPU prefix hit rate (tokens), host / disk hit rates (kvbm_*_cache_hit_rate: blocks found past the
GPU prefix), blocks onboarded from host / disk.
Usage: PYTHONPATH=. python tests/benchmarks/bench_kv_offload.py [--conversations 24] [--turns 6] [--plot PNG]
"""

from __future__ import annotations

import argparse
import heapq
import random
from dataclasses import dataclass, field

import numpy as np

from dynamo_mono.engine import EngineRequest, SamplingParams, StopConditions
from dynamo_mono.kv_events import KvEventBatch
from dynamo_mono.router.indexer import KvIndexer
from dynamo_mono.router.load import InstanceLoad
from dynamo_mono.router.selector import KvSelector
from mocker.kv_manager import KvManager
from mocker.kv_tiers import TierConfig
from mocker.outputs import TokenSource
from mocker.perf_model import PerfModel
from mocker.scheduler import Scheduler, StepPlan
from mocker.sequence import Sequence

ALLOWED = np.arange(10, 30000, dtype=np.int64)
BYTES_PER_TOKEN = 131072  # 7-8B model, bf16


@dataclass
class Config:
    name: str
    instances: int
    host_blocks: int
    disk_blocks: int
    host_weight: float = 0.0  # router weights (0 = tier-blind)
    disk_weight: float = 0.0


@dataclass
class Instance:
    sched: Scheduler
    busy_until: float = 0.0
    plan: StepPlan | None = None
    plan_ms: float = 0.0
    event_id: int = 0


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    prefilled: int = 0
    prompt_tokens: int = 0
    gpu_hit_tokens: int = 0
    host_hits: int = 0
    host_queried: int = 0
    disk_hits: int = 0
    disk_queried: int = 0
    onboard_h2d: int = 0
    onboard_d2d: int = 0
    preemptions: int = 0


def simulate(cfg: Config, a: argparse.Namespace) -> Result:
    bs = a.block_size
    perf = PerfModel()
    block_bytes = bs * BYTES_PER_TOKEN
    tiers = TierConfig(cfg.host_blocks, cfg.disk_blocks, block_bytes / (a.host_gbps * 1e6),
                       block_bytes / (a.disk_gbps * 1e6), not a.no_disk_filter)
    insts = [Instance(Scheduler(KvManager(a.gpu_blocks, bs, tiers=tiers, dp_rank=0),
                                max_num_seqs=a.max_num_seqs, max_num_batched_tokens=a.max_batched_tokens,
                                watermark=0.01))
             for _ in range(cfg.instances)]
    index = KvIndexer(bs, host_weight=cfg.host_weight, disk_weight=cfg.disk_weight)
    for i in range(cfg.instances):
        index.add_instance((i, 0))
    selector = KvSelector(bs, 1.0, 0.0, random.Random(0))
    rng = random.Random(a.seed)
    res = Result()
    # arrivals: (time, seq number, conversation, turn, history tokens)
    arrivals: list[tuple[float, int, int, int, list[int]]] = []
    n = 0
    for c in range(a.conversations):
        hist = [rng.randrange(10, 30000) for _ in range(a.first_prompt)]
        heapq.heappush(arrivals, (rng.uniform(0, a.ramp_ms), n, c, 0, hist))
        n += 1
    pending: dict[int, tuple[float, int, int, int]] = {}  # id(seq) -> (arrival, conv, turn, prompt len)
    seqs: dict[int, Sequence] = {}
    t = 0.0

    def route(tokens: list[int], seq: Sequence) -> int:
        if cfg.instances == 1:
            return 0
        hashes = seq.ensure_hashes(len(tokens) // bs, bs)
        overlaps = index.find_matches(hashes)
        keys = [(i, 0) for i in range(cfg.instances)]
        loads = []
        for inst in insts:
            ld = InstanceLoad(a.gpu_blocks, a.max_batched_tokens)
            s = inst.sched
            ld.prefill_tokens = sum(len(q.tokens) - q.num_computed for q in s.running) + \
                sum(len(w[2].tokens) for w in s.waiting)
            ld.decode_blocks = s.kv.active_blocks
            loads.append(ld)
        return selector.pick(keys, loads, overlaps, len(tokens))[0]

    while arrivals or any(inst.plan is not None or inst.sched.has_work() for inst in insts):
        # start a step on every idle instance with work
        for i, inst in enumerate(insts):
            if inst.plan is None and inst.sched.has_work():
                plan, failed = inst.sched.schedule()
                assert not failed
                if plan.seqs:
                    ms = perf.step_ms(plan.prefill, plan.decode_seqs, plan.decode_kv_tokens) + plan.onboard_ms
                    res.prefilled += sum(nw for nw, _c, _f in plan.prefill)
                    inst.plan, inst.plan_ms, inst.busy_until = plan, ms, t + ms
                _publish(i, inst, index)
        next_step = min((inst.busy_until for inst in insts if inst.plan is not None), default=float("inf"))
        next_arrival = arrivals[0][0] if arrivals else float("inf")
        if next_arrival <= next_step:
            t, _, c, turn, hist = heapq.heappop(arrivals)
            req = EngineRequest(f"c{c}t{turn}", hist, SamplingParams(),
                                StopConditions(max_tokens=a.output_tokens, ignore_eos=True))
            seq = Sequence(req, TokenSource(ALLOWED, c * 1000 + turn, None, None), block_size=bs,
                           prefix_caching=True, arrival=n)
            n += 1
            i = route(hist, seq)
            insts[i].sched.add(seq)
            pending[id(seq)] = (t, c, turn, len(hist))
            seqs[id(seq)] = seq
            continue
        t = next_step
        for i, inst in enumerate(insts):
            if inst.plan is None or inst.busy_until > t:
                continue
            plan = inst.plan
            inst.plan = None
            inst.sched.complete(plan)
            if inst.sched.kv.tiers is not None:
                inst.sched.kv.tiers.tick(inst.plan_ms)
            _publish(i, inst, index)
            for seq in plan.seqs:
                info = pending.get(id(seq))
                if info is None:
                    continue
                arr, c, turn, plen = info
                if len(seq.tokens) > plen and seq.first_sent is not True:
                    seq.first_sent = True
                    res.ttft.append(t - arr)
                if seq.finish:
                    del pending[id(seq)]
                    del seqs[id(seq)]
                    res.prompt_tokens += plen
                    if turn + 1 < a.turns:
                        user = [rng.randrange(10, 30000) for _ in range(a.user_tokens)]
                        heapq.heappush(arrivals, (t + rng.uniform(0.5, 1.5) * a.think_ms, n, c, turn + 1,
                                                  list(seq.tokens) + user))
                        n += 1
    for inst in insts:
        s = inst.sched
        ts = s.kv.tiers
        matched = ts.stats.matched_tokens if ts is not None else 0
        res.gpu_hit_tokens += s.hit_tokens - matched
        res.preemptions += s.preemptions
        if ts is not None:
            st = ts.stats
            res.host_hits += st.host_hits
            res.host_queried += st.host_queried
            res.disk_hits += st.disk_hits
            res.disk_queried += st.disk_queried
            res.onboard_h2d += st.onboard_h2d
            res.onboard_d2d += st.onboard_d2d
    return res


def _publish(i: int, inst: Instance, index: KvIndexer) -> None:
    events = inst.sched.kv.take_events()
    if events:
        inst.event_id += 1
        index.apply(KvEventBatch(i, 0, inst.event_id, events))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--conversations", type=int, default=24)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--first-prompt", type=int, default=1024)
    p.add_argument("--user-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--think-ms", type=float, default=4000.0)
    p.add_argument("--ramp-ms", type=float, default=4000.0)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--gpu-blocks", type=int, default=768, help="per instance")
    p.add_argument("--host-blocks", type=int, default=1536)
    p.add_argument("--disk-blocks", type=int, default=12288)
    p.add_argument("--host-gbps", type=float, default=25.0)
    p.add_argument("--disk-gbps", type=float, default=5.0)
    p.add_argument("--no-disk-filter", action="store_true")
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--max-batched-tokens", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--plot", default=None, help="write a PNG bar chart of TTFT p50 / p90 here")
    a = p.parse_args()
    h, d = a.host_blocks, a.disk_blocks
    configs = [
        Config("1 inst, GPU only", 1, 0, 0),
        Config("1 inst, GPU + host", 1, h, 0),
        Config("1 inst, GPU + host + disk", 1, h, d),
        Config("2 inst, +host+disk, tier-blind routing", 2, h, d, 0.0, 0.0),
        Config("2 inst, +host+disk, tier-aware routing", 2, h, d, 0.5, 0.25),
    ]
    if a.conversations:
        print(f"{a.conversations} conversations x {a.turns} turns, first prompt {a.first_prompt}, "
              f"+{a.user_tokens} user / {a.output_tokens} output tokens per turn, think {a.think_ms:.0f} ms, "
              f"block {a.block_size}, GPU {a.gpu_blocks} blocks/instance, host {h}, disk {d}")
    rows = []
    print("| configuration | TTFT p50 ms | TTFT p90 ms | prefilled tokens | GPU hit | host hit | disk hit "
          "| onboarded h2d / d2d | preemptions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cfg in configs:
        r = simulate(cfg, a)
        p50, p90 = np.percentile(r.ttft, [50, 90])
        gpu = r.gpu_hit_tokens / r.prompt_tokens if r.prompt_tokens else 0.0
        hh = f"{r.host_hits / r.host_queried:.1%}" if r.host_queried else "-"
        dh = f"{r.disk_hits / r.disk_queried:.1%}" if r.disk_queried else "-"
        print(f"| {cfg.name} | {p50:.0f} | {p90:.0f} | {r.prefilled} | {gpu:.1%} | {hh} | {dh} "
              f"| {r.onboard_h2d} / {r.onboard_d2d} | {r.preemptions} |", flush=True)
        rows.append((cfg.name, p50, p90))
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(9, 4))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r[1] for r in rows], 0.4, label="TTFT p50")
        ax.bar(x + 0.2, [r[2] for r in rows], 0.4, label="TTFT p90")
        ax.set_xticks(x, [r[0].replace(", ", "\n") for r in rows], fontsize=7)
        ax.set_ylabel("simulated ms")
        ax.set_title("Mocker multi-turn trace: KV offload tiers and routing")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)


if __name__ == "__main__":
    main()
