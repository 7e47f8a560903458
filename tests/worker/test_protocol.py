"""Worker protocol in-process: framing limits, authentication, heartbeat loss, stream failure → migration."""

from __future__ import annotations

import asyncio
import logging

import pytest

import msgspec

from conformance.waits import wait_until

from dynamo_mono.engine import (
    EngineError,
    EngineRequest,
    KvEndpoint,
    KvTransferParams,
    ModelCard,
    SamplingParams,
    StopConditions,
)
from dynamo_mono.transports import messages as m
from dynamo_mono.transports.framing import FramedConnection, FrameTooLarge
from dynamo_mono.transports.tcp import TcpKvTransport, connect
from dynamo_mono.transports.kv import KvTransferError
from dynamo_mono.worker.registry import WorkerRegistry

pytestmark = pytest.mark.timeout(20)


async def test_oversized_frame_closes_connection_without_buffering():
    got: list = []

    async def handle(reader, writer):
        conn = FramedConnection(reader, writer, max_frame=1024)
        try:
            got.append(await conn.recv())
            await conn.recv()
        except FrameTooLarge as exc:
            got.append(exc)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await connect("127.0.0.1", port, max_frame=1 << 30)
    await client.send(b"x" * 1000)
    # Announce 1 GiB but send only the header: the server must refuse on the header alone.
    client.writer.write((1 << 30).to_bytes(4, "big"))
    await client.writer.drain()
    closed = await asyncio.wait_for(client.reader.read(1), 5)
    assert closed == b""  # the server hung up
    assert got[0] == b"x" * 1000 and isinstance(got[1], FrameTooLarge)
    server.close()


def test_typed_request_and_card_fields_round_trip_on_the_wire():
    endpoint = KvEndpoint("nixl", "10.0.0.2", 4321, "agent-7")
    req = EngineRequest("r1", [1, 2, 3, 9], SamplingParams(seed=1, logprobs=2), StopConditions(max_tokens=5),
                        priority=4, dp_rank=1, block_hashes=[11], tools=[{"type": "function"}],
                        tool_choice={"type": "function", "function": {"name": "f"}}, resumed_output_tokens=1,
                        kv_export_key="r1/0", kv_transfer=KvTransferParams(endpoint, "r1/0", 3))
    got = m.decode(m.encode(m.Generate(3, 0, req)))
    assert got.request == req and got.request.kv_transfer.endpoint == endpoint
    card = ModelCard("m", 512, 16, total_kv_blocks=48, disaggregation_mode="prefill", kv_endpoint=endpoint)
    reg = m.decode(m.encode(m.Register("t", "m", [card, ModelCard("m", 512, 16)], [[], []])))
    assert reg.cards[0] == card and reg.cards[1].disaggregation_mode == "agg" and reg.cards[1].kv_endpoint is None
    # a card with a mode the server does not know is refused when decoded, not routed by guess
    raw = m.encode(m.Register("t", "m", [card], [[]])).replace(b"prefill", b"prefilx")
    with pytest.raises(msgspec.ValidationError, match="disaggregation_mode 'prefilx'"):
        m.decode(raw)


def _card(name="tiny-chatml", block_size=64) -> ModelCard:
    return ModelCard(name=name, max_model_len=8192, block_size=block_size, total_kv_blocks=100, kv_events=True)


async def _register(port: int, token: str, card: ModelCard) -> tuple[FramedConnection, object]:
    conn = await connect("127.0.0.1", port)
    await conn.send(m.encode(m.Register(token, card.name, [card], [[]], "fake")))
    return conn, m.decode(await asyncio.wait_for(conn.recv(), 5))


async def test_registry_authenticates_and_checks_the_model(remote_only_state):
    reg = WorkerRegistry(remote_only_state, token="s3cret", host="127.0.0.1")
    port = await reg.start()
    try:
        _, reply = await _register(port, "wrong", _card())
        assert isinstance(reply, m.Refused) and "invalid worker token" in reply.reason
        _, reply = await _register(port, "s3cret", _card(name="other-model"))
        assert isinstance(reply, m.Refused) and "'other-model' is not served here" in reply.reason
        pool = remote_only_state.models["tiny-chatml"].pool
        assert not pool.instances
        # The first instance of a model sets its block size (the server's own engine options do not) ...
        conn, reply = await _register(port, "s3cret", _card(block_size=16))
        assert isinstance(reply, m.Registered)
        assert list(pool.instances) == reply.worker_ids and not pool.instances[reply.worker_ids[0]].local
        assert pool.router.block_size == 16
        # ... and an instance with another block size is refused while that one is there.
        _, reply = await _register(port, "s3cret", _card(block_size=64))
        assert isinstance(reply, m.Refused) and "block size 64" in reply.reason
    finally:
        await reg.stop()


async def test_silent_worker_is_removed_once_for_missed_heartbeats(remote_only_state, caplog):
    caplog.set_level(logging.WARNING, logger="dynamo_mono.worker.registry")
    reg = WorkerRegistry(remote_only_state, token="t", host="127.0.0.1", heartbeat_interval=0.2,
                         heartbeat_misses=3)
    port = await reg.start()
    try:
        conn, reply = await _register(port, "t", _card())  # registers, then never sends a heartbeat
        pool = remote_only_state.models["tiny-chatml"].pool
        assert reply.worker_ids[0] in pool.instances
        (session,) = reg.sessions
        await wait_until(lambda: not pool.instances, "the silent worker to leave the pool")
        # Both of the session's loops (reader, heartbeat) have seen the death: neither can report it again.
        await wait_until(lambda: all(t.done() for t in session._tasks), "the session's loops to end")
        assert reg.removed == 1  # exactly once
        assert "no heartbeat for 0.6s" in caplog.text  # removed for the missed heartbeats, not anything else
    finally:
        await reg.stop()


async def test_worker_loss_mid_stream_raises_retryable_error(remote_only_state):
    """A fake worker streams two tokens and disconnects: the pool sees a retryable EngineError."""
    reg = WorkerRegistry(remote_only_state, token="t", host="127.0.0.1")
    port = await reg.start()
    try:
        conn, reply = await _register(port, "t", _card())
        wid = reply.worker_ids[0]
        engine = remote_only_state.models["tiny-chatml"].pool.instances[wid].engine
        req = EngineRequest("r1", [1, 2, 3], SamplingParams(seed=1), StopConditions(max_tokens=10))
        got: list[int] = []

        async def consume():
            async for out in engine.generate(req):
                got.extend(out.token_ids)

        task = asyncio.create_task(consume())
        msg = m.decode(await asyncio.wait_for(conn.recv(), 5))
        while not isinstance(msg, m.Generate):
            msg = m.decode(await asyncio.wait_for(conn.recv(), 5))
        assert msg.request.request_id == "r1" and msg.request.sampling.seed == 1
        await conn.send(m.encode(m.Output(msg.stream, [7, 8])))
        await wait_until(lambda: got == [7, 8], "the two tokens to reach the consumer")
        conn.close()
        with pytest.raises(EngineError) as ei:
            await asyncio.wait_for(task, 5)
        assert ei.value.retryable and got == [7, 8]
        assert wid not in remote_only_state.models["tiny-chatml"].pool.instances
    finally:
        await reg.stop()


async def test_tcp_kv_transfer_moves_exact_bytes_once():
    a, b = TcpKvTransport(), TcpKvTransport()
    ep = await a.start()
    await b.start()
    try:
        payload = bytearray(range(256)) * 4096 * 3  # 3 MiB
        a.publish("req-1", payload)
        got = await b.fetch(ep, "req-1", len(payload))
        assert got == payload
        with pytest.raises(KvTransferError, match="not held"):
            await b.fetch(ep, "req-1", len(payload))  # pull-once: the buffer was released
    finally:
        await a.stop()
        await b.stop()
