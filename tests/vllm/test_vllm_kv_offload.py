"""vLLM's native KV offloading: the flags pass through to vLLM, offload events become tier-tagged KV events."""

from __future__ import annotations

import pytest

from dynamo_mono.engine import EngineArgs
from dynamo_mono.kv_events import BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.router.indexer import KvIndexer

pytestmark = pytest.mark.vllm


def test_native_offload_flags_reach_vllm(tiny_model):
    from dynamo_mono_vllm.engine_args import build_engine_args

    ea = build_engine_args(EngineArgs(str(tiny_model), "m", 0, 512, [2], 100, {"dtype": "float32"},
                                      extra_args=["--kv-offloading-size", "2", "--kv-offloading-backend", "native"]))
    assert (ea.kv_offloading_size, ea.kv_offloading_backend) == (2.0, "native")


def test_offload_events_are_tier_tagged_and_index_as_host_and_disk():
    from vllm.distributed.kv_events import BlockRemoved as VRemoved
    from vllm.distributed.kv_events import BlockStored as VStored
    from vllm.distributed.kv_events import KVEventBatch

    from dynamo_mono_vllm.kv_listener import KvEventListener, to_int_hash

    lis = KvEventListener(worker_id=3)
    try:
        got: list[KvEventBatch] = []
        lis.sink = got.append
        h1, h2 = b"\x01" * 32, b"\x02" * 32
        lis.handle(KVEventBatch(ts=1.0, events=[
            VStored(block_hashes=[h1, h2], parent_block_hash=None, token_ids=list(range(8)), block_size=4,
                    lora_id=None, medium="GPU", lora_name=None)]))
        lis.handle(KVEventBatch(ts=2.0, events=[
            VStored(block_hashes=[h1, h2], parent_block_hash=None, token_ids=[], block_size=0, lora_id=None,
                    medium="CPU", lora_name=None),
            VStored(block_hashes=[h1], parent_block_hash=None, token_ids=[], block_size=0, lora_id=None,
                    medium="STORAGE", lora_name=None)]))
        lis.handle(KVEventBatch(ts=3.0, events=[VRemoved(block_hashes=[h1, h2], medium="GPU")]))
        snap = lis.snapshot()
    finally:
        lis.sock.close(0)
        lis.ctx.term()
    host, disk = got[1].events
    assert isinstance(host, BlockStored) and host.tier == "host"
    assert host.block_hashes == [to_int_hash(h1), to_int_hash(h2)]
    assert isinstance(disk, BlockStored) and disk.tier == "disk"
    assert isinstance(got[2].events[0], BlockRemoved) and got[2].events[0].tier == "gpu"
    assert snap[0].events == []  # the GPU mirror is untouched by offload events

    idx = KvIndexer(4, host_weight=0.5, disk_weight=0.25)
    idx.add_instance((3, 0))
    for b in got:
        idx.apply(b)
    held = idx.tier_held((3, 0))
    assert held["gpu"] == set() and len(held["host"]) == 2 and len(held["disk"]) == 1
