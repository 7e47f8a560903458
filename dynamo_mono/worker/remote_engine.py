"""RemoteEngine: the Engine (and MediaGenerator) protocol over a worker connection, so the pool routes to it like a
local engine."""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

from dynamo_mono.engine import (
    EmbeddingOutput,
    EmbeddingRequest,
    EngineError,
    EngineOutput,
    EngineRequest,
    KvEventSink,
    LoadMetrics,
    LoraAdapter,
    ModelCard,
    RequestRejected,
)
from dynamo_mono.kv_events import KvEventBatch
from dynamo_mono.media.contract import MediaOutput, MediaProgress, MediaRequest
from dynamo_mono.transports import messages as m
from dynamo_mono.transports.framing import FrameTooLarge
from dynamo_mono.worker.stream import StreamHost



def failure_error(item: m.StreamFailed) -> EngineError:
    """The exception a worker's StreamFailed stands for (RequestRejected keeps the 400 across the link)."""
    if item.rejected:
        return RequestRejected(item.message, param=item.param)
    return EngineError(item.message, retryable=item.retryable)

class RemoteEngine:
    """One engine instance hosted by a worker process (index `instance` of its Register)."""

    def __init__(self, session: StreamHost, instance: int, card: ModelCard, worker_id: int,
                 snapshot: list[KvEventBatch]) -> None:
        self.session = session
        self.instance = instance
        self.card = card
        self.worker_id = worker_id
        self.sink: KvEventSink | None = None
        self.snapshot = snapshot
        self.loads: list[LoadMetrics] = [LoadMetrics(dp_rank=r, kv_total_blocks=card.total_kv_blocks or 0)
                                         for r in range(card.dp_size)]
        self.worker_healthy = True
        self.loras: set[str] = set()

    async def start(self) -> None:  # the worker started it
        return None

    async def stop(self) -> None:  # the worker owns its lifecycle
        return None

    def model_card(self) -> ModelCard:
        return self.card

    def healthy(self) -> bool:
        return self.worker_healthy and self.session.alive

    def set_kv_event_sink(self, sink: KvEventSink | None) -> None:
        self.sink = sink

    def kv_snapshot(self) -> list[KvEventBatch]:
        return list(self.snapshot)

    def load_metrics(self) -> list[LoadMetrics]:
        return self.loads

    # --- LoRA: the adapter's files travel with the LoadLora (the worker cannot read the server's disk) ---------
    async def load_lora(self, adapter: LoraAdapter) -> None:
        files = await asyncio.get_running_loop().run_in_executor(None, _read_adapter_files, adapter.path)
        await self._lora_call(adapter.name, lambda sid: m.LoadLora(sid, self.instance, adapter.name, adapter.lora_id,
                                                                   files))
        self.loras.add(adapter.name)

    async def unload_lora(self, name: str) -> None:
        self.loras.discard(name)
        if self.session.alive:
            await self._lora_call(name, lambda sid: m.UnloadLora(sid, self.instance, name))

    def list_loras(self) -> list[str]:
        return sorted(self.loras)

    async def _lora_call(self, name: str, make) -> None:
        session = self.session
        if not session.alive:
            raise EngineError(f"worker {session.name} is disconnected")
        sid, stream = session.open_stream(f"lora:{name}")
        finished = False
        try:
            try:
                session.send_nowait(make(sid))
            except FrameTooLarge as exc:
                finished = True
                raise EngineError(f"adapter '{name}' is too large for the worker link (raise --max-frame-size on "
                                  f"server and worker): {exc}", retryable=False) from None
            item = await _next_item(stream)
            finished = True
            if type(item) is not m.LoraDone:
                raise failure_error(item)
        except ConnectionError as exc:
            finished = True
            raise EngineError(f"worker {session.name}: {exc}") from None
        finally:
            session.close_stream(sid, abort=not finished)

    async def abort(self, request_id: str) -> None:
        for sid in self.session.streams_of(request_id):
            self.session.abort_stream(sid)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        session = self.session
        if not session.alive:
            raise EngineError(f"worker {session.name} is disconnected")
        sid, stream = session.open_stream(request.request_id)
        finished = False
        try:
            try:
                session.send_nowait(m.Generate(sid, self.instance, request))
            except FrameTooLarge as exc:  # nothing was sent: the request (its decoded media) is too big
                finished = True
                raise EngineError(f"request too large for the worker link (its media are sent decoded; raise "
                                  f"--max-frame-size on server and worker): {exc}", retryable=False) from None
            loop = asyncio.get_running_loop()
            items = stream.items
            while True:
                if not items:
                    fut = loop.create_future()
                    stream.waiter = fut
                    await fut
                    continue
                item = items.popleft()
                if type(item) is m.Output:
                    out = m.engine_output(item)
                    if out.finish_reason is not None:
                        finished = True
                    yield out
                    if finished:
                        return
                else:  # StreamFailed, from the worker or because the connection died
                    finished = True
                    raise failure_error(item)
        except ConnectionError as exc:
            finished = True
            raise EngineError(f"worker {session.name}: {exc}") from None
        finally:
            session.close_stream(sid, abort=not finished)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingOutput:
        """One Embed frame out, one Embedded (or StreamFailed) back; cancelling aborts it on the worker."""
        session = self.session
        if not session.alive:
            raise EngineError(f"worker {session.name} is disconnected")
        sid, stream = session.open_stream(request.request_id)
        finished = False
        try:
            session.send_nowait(m.Embed(sid, self.instance, request))
            item = await _next_item(stream)
            finished = True
            if type(item) is m.Embedded:
                try:
                    return m.embedding_output(item)
                except ValueError as exc:
                    raise EngineError(f"worker {session.name}: malformed embeddings ({exc})") from None
            raise failure_error(item)
        except ConnectionError as exc:
            finished = True
            raise EngineError(f"worker {session.name}: {exc}") from None
        finally:
            session.close_stream(sid, abort=not finished)

    async def generate_media(self, request: MediaRequest) -> AsyncIterator[MediaProgress | MediaOutput]:
        """Progress per MediaStep, then the MediaOutput reassembled from the MediaChunks and the MediaDone; closing
        the iterator aborts the request on the worker (its generator is closed)."""
        session = self.session
        if not session.alive:
            raise EngineError(f"worker {session.name} is disconnected")
        sid, stream = session.open_stream(request.request_id)
        finished = False
        try:
            try:
                session.send_nowait(m.GenerateMedia(sid, self.instance, request))
            except FrameTooLarge as exc:  # nothing was sent: the request (its input_reference) is too big
                finished = True
                raise EngineError(f"media request too large for the worker link: {exc}", retryable=False) from None
            parts = m.MediaAssembler()
            while True:
                item = await _next_item(stream)
                t = type(item)
                if t is m.MediaChunk:
                    try:
                        parts.add(item)
                    except ValueError as exc:
                        raise EngineError(f"worker {session.name}: malformed media result ({exc})") from None
                elif t is m.MediaStep:
                    yield m.media_progress(item)
                elif t is m.MediaDone:
                    finished = True
                    try:
                        out = parts.finish(item)
                    except ValueError as exc:
                        raise EngineError(f"worker {session.name}: malformed media result ({exc})") from None
                    yield out
                    return
                else:  # StreamFailed, from the worker or because the connection died
                    finished = True
                    raise failure_error(item)
        except ConnectionError as exc:
            finished = True
            raise EngineError(f"worker {session.name}: {exc}") from None
        finally:
            session.close_stream(sid, abort=not finished)


async def _next_item(stream: Any) -> Any:
    """The next frame of a stream, waiting for it (the paths that are not per token; generate() inlines this)."""
    while not stream.items:
        fut = asyncio.get_running_loop().create_future()
        stream.waiter = fut
        await fut
    return stream.items.popleft()


def _read_adapter_files(path: str) -> dict[str, bytes]:
    """The regular files at the top level of an adapter directory (adapter_config.json, weights, tokenizer)."""
    out = {}
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                out[entry] = f.read()
    return out
