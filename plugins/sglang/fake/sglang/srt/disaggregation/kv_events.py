"""FAKE sglang.srt.disaggregation.kv_events (0.5.23): event structs, KVEventsConfig and the ZMQ publisher wire."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, fields
from itertools import count
from typing import Any, Optional, Union

import msgspec
import zmq


class EventBatch(msgspec.Struct, array_like=True, gc=False):  # type: ignore[call-arg]
    ts: float
    events: list[Any]
    attn_dp_rank: Optional[int] = None


class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
    """Tagged msgpack maps: "type" = class name, optional fields left at None are omitted."""


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: Optional[int]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str] = None
    cache_salt: Optional[str] = None
    session_id: Optional[str] = None
    lora_name: Optional[str] = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: Optional[str] = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]


@dataclass(slots=True)
class KVEventsConfig:
    """Same fields and defaults as 0.5.23's pydantic KVEventsConfig; unknown keys are refused (extra="forbid" there
    is not set, but the fake models no other key)."""

    publisher: str = "null"
    endpoint: str = "tcp://*:5557"
    bind: Optional[bool] = None
    replay_endpoint: Optional[str] = None
    buffer_steps: int = 10_000
    hwm: int = 100_000
    max_queue_size: int = 100_000
    topic: str = ""
    format: str = "default"

    @classmethod
    def from_cli(cls, cli_value: str) -> "KVEventsConfig":
        data = json.loads(cli_value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise NotImplementedError(f"fake sglang: KVEventsConfig keys {unknown} are not modelled")
        if data.get("replay_endpoint") is not None or data.get("format", "default") != "default":
            raise NotImplementedError("fake sglang: replay_endpoint / dynamo format are not modelled")
        return cls(**data)


class ZmqEventPublisher:
    """One dp rank's PUB socket: endpoint port offset by the rank; bind for wildcard / ipc hosts, else connect.
    Sends (topic, seq u64 BE, msgpack KVEventBatch). (The real one sends from a thread with a replay buffer.)"""

    def __init__(self, attn_dp_rank: int, endpoint: str = "tcp://*:5557", replay_endpoint: Optional[str] = None,
                 buffer_steps: int = 10_000, hwm: int = 100_000, max_queue_size: int = 100_000, topic: str = "",
                 bind: Optional[bool] = None) -> None:
        self._dp_rank = attn_dp_rank
        self._endpoint = self.offset_endpoint_port(endpoint, attn_dp_rank)
        self._ctx = zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        should_bind = bind if bind is not None else (
            "*" in self._endpoint or "::" in self._endpoint or "0.0.0.0" in self._endpoint
            or self._endpoint.startswith(("ipc://", "inproc://")))
        if should_bind:
            self._pub.bind(self._endpoint)
        else:
            self._pub.connect(self._endpoint)
        self._seq = count()
        self._topic = topic.encode()
        self._enc = msgspec.msgpack.Encoder()
        self._lock = threading.Lock()

    def publish(self, events: EventBatch) -> None:
        if events.attn_dp_rank is None:
            events.attn_dp_rank = self._dp_rank
        with self._lock:
            self._pub.send_multipart((self._topic, next(self._seq).to_bytes(8, "big"), self._enc.encode(events)))

    def shutdown(self) -> None:
        self._pub.close(linger=0)

    @staticmethod
    def offset_endpoint_port(endpoint: Optional[str], data_parallel_rank: int) -> Optional[str]:
        if not endpoint or data_parallel_rank == 0:
            return endpoint
        if "inproc" in endpoint:
            return f"{endpoint}_dp{data_parallel_rank}"
        if "tcp" in endpoint:
            base, port = endpoint.rsplit(":", 1)
            return f"{base}:{int(port) + data_parallel_rank}"
        raise ValueError("Invalid endpoint: must contain 'inproc' or 'tcp'")
