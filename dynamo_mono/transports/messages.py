"""Messages between server and workers (msgspec msgpack, tagged array-like structs) and their codecs."""

from __future__ import annotations

from typing import Any, Iterator, Union

import msgspec

import numpy as np

from dynamo_mono.engine import (
    EmbeddingOutput,
    EmbeddingRequest,
    EngineOutput,
    EngineRequest,
    KvTransferParams,
    LoadMetrics,
    ModelCard,
    TokenLogprob,
)
from dynamo_mono.kv_events import AllBlocksCleared, BlockRemoved, BlockStored, KvEventBatch
from dynamo_mono.media.contract import MediaFile, MediaOutput, MediaProgress, MediaRequest

# 2: typed EngineRequest / ModelCard fields (migration resume, KV transfer, disaggregation) replace `extra`;
#    Register carries the model's files so a worker can bring a model the server does not serve yet.
# 3: embedding models: ModelCard.kind / embedding_dim / matryoshka, Embed / Embedded messages.
# 4: media models (image / video / audio): ModelCard.media (MediaLimits) and ModelFiles of a media kind (no
#    tokenizer files); GenerateMedia / MediaStep / MediaChunk / MediaDone messages.
# 5: media input of chat models: EngineRequest.media (MediaItem arrays as (dtype, shape, bytes)), ModelCard
#    media_input (MediaTokens), BlockStored media hashes, LoadMetrics embedding-cache counts; `multimodal` gone.
# 6: LoRA: ModelCard supports_lora / max_loras / max_lora_rank, EngineRequest.lora_name, LoadLora / UnloadLora
#    answered by LoraDone or StreamFailed.
# 7: disaggregation with engines that name their own KV transfer (vLLM NIXL): KvTransferParams engine fields,
#    Output.kv_transfer, LoadMetrics kv_transfer_bytes / kv_transfer_failures.
PROTOCOL_VERSION = 7

# Media results cross the worker link in chunks of at most this many bytes (one frame each), never as one frame:
# a video of tens of MB stays under --max-frame-size and interleaves with the other streams' frames.
MEDIA_CHUNK_BYTES = 1 << 20


class ModelFiles(msgspec.Struct, array_like=True):
    """What a server needs to serve a model it does not know yet: the model directory's tokenizer and
    config files (name -> bytes), the chat template in force, the context length and the model's kind."""

    kind: str
    files: dict[str, bytes]
    chat_template: str | None
    max_model_len: int


class Register(msgspec.Struct, tag=True, array_like=True):
    """Worker → server, first frame: who I am, what I serve, proof that I may join."""

    token: str
    model: str
    cards: list[ModelCard]
    snapshots: list[list[tuple]]  # per instance: wire KV batches of what it already caches
    name: str = ""
    protocol: int = PROTOCOL_VERSION
    model_files: ModelFiles | None = None


class Registered(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: accepted; the worker ids the server assigned to each instance."""

    worker_ids: list[int]
    heartbeat_interval: float


class Refused(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: not accepted, and why (the worker exits with this message)."""

    reason: str
    retry: bool = False


class Heartbeat(msgspec.Struct, tag=True, array_like=True):
    """Both directions, every heartbeat interval; healthy is per instance (worker → server)."""

    healthy: list[bool] = []


class Load(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: load snapshot per instance."""

    loads: list[list[LoadMetrics]]


class Generate(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: start streaming request on instance (index into the Register cards)."""

    stream: int
    instance: int
    request: EngineRequest


class Output(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: one EngineOutput of a stream (fields flattened for a compact encoding)."""

    stream: int
    token_ids: list[int]
    finish_reason: str | None = None
    stop_token_id: int | None = None
    cached_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None
    index: int = 0
    kv_transfer: KvTransferParams | None = None


class Embed(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: embed a batch on instance; answered by one Embedded or StreamFailed on `stream`."""

    stream: int
    instance: int
    request: EmbeddingRequest


class Embedded(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: the vectors of an Embed, rows x dim little-endian float32 in row order."""

    stream: int
    rows: int
    dim: int
    data: bytes
    prompt_tokens: int


class GenerateMedia(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: run a media request on instance; answered by MediaStep* MediaChunk* MediaDone, or
    StreamFailed, on `stream` (Abort closes the generator)."""

    stream: int
    instance: int
    request: MediaRequest


class MediaStep(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: one MediaProgress of a media stream."""

    stream: int
    step: int
    total_steps: int


class MediaChunk(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: the next at most MEDIA_CHUNK_BYTES of output file `file` (files in order, chunks in order)."""

    stream: int
    file: int
    data: bytes


class MediaFileInfo(msgspec.Struct, array_like=True):
    """What a MediaDone says of one file: its type, extension and the total size its chunks must add up to."""

    content_type: str
    extension: str
    size: int


class MediaDone(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: the end of a media stream, the MediaOutput without the file bytes (sent as MediaChunks)."""

    stream: int
    files: list[MediaFileInfo]
    seed: int | None
    inference_time_s: float
    steps: int
    extra: dict[str, float] = {}


class LoadLora(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: load adapter `name` on instance from its files (file name -> bytes, the adapter directory's
    top level: the worker cannot read the server's disk); answered by LoraDone or StreamFailed on `stream`."""

    stream: int
    instance: int
    name: str
    lora_id: int
    files: dict[str, bytes]


class UnloadLora(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: unload adapter `name` from instance; answered by LoraDone or StreamFailed on `stream`."""

    stream: int
    instance: int
    name: str


class LoraDone(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: the LoadLora / UnloadLora on `stream` succeeded."""

    stream: int


class StreamFailed(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: the engine raised; the server turns this into an EngineError (a RequestRejected when
    `rejected`: the client's parameters were refused, `param` names the one)."""

    stream: int
    message: str
    retryable: bool = True
    rejected: bool = False
    param: str | None = None


class Abort(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: the consumer went away; abort the stream."""

    stream: int


class KvEvents(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: one KV event batch of an instance, in wire form."""

    instance: int
    batch: tuple


class Snapshot(msgspec.Struct, tag=True, array_like=True):
    """Worker → server: the full cache state of an instance (reply to a resync)."""

    instance: int
    batches: list[tuple]


class SnapshotRequest(msgspec.Struct, tag=True, array_like=True):
    """Server → worker: send a Snapshot of instance (after a gap in its events)."""

    instance: int


Message = Union[Register, Registered, Refused, Heartbeat, Load, Generate, Output, StreamFailed, Abort, KvEvents,
                Snapshot, SnapshotRequest, Embed, Embedded, GenerateMedia, MediaStep, MediaChunk, MediaDone,
                LoadLora, UnloadLora, LoraDone]

# dtypes of MediaItem arrays (images and video uint8, audio float32); anything else is refused on decode.
_ARRAY_DTYPES = frozenset({"|u1", "<f4"})


def _enc_hook(obj: Any) -> Any:
    """numpy arrays (MediaItem.data) as (dtype, shape, raw bytes); the bytes are a view, not a copy."""
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.str not in _ARRAY_DTYPES:
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return (arr.dtype.str, list(arr.shape), memoryview(arr).cast("B"))
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _dec_hook(kind: type, obj: Any) -> Any:
    if kind is np.ndarray:
        try:
            dtype, shape, data = obj
            if dtype not in _ARRAY_DTYPES:
                raise ValueError(f"array dtype {dtype!r}")
            arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)  # read-only, over the frame's bytes
        except (TypeError, ValueError) as exc:
            raise msgspec.ValidationError(f"invalid media array: {exc}") from None
        return arr
    raise NotImplementedError(f"cannot decode {kind!r}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(Message, dec_hook=_dec_hook)
encode = _encoder.encode
decode = _decoder.decode


def output_message(stream: int, out: EngineOutput) -> Output:
    return Output(stream, out.token_ids, out.finish_reason, out.stop_token_id, out.cached_tokens,
                  out.prompt_tokens, out.error, out.logprobs, out.index, out.kv_transfer)


def engine_output(m: Output) -> EngineOutput:
    return EngineOutput(m.token_ids, m.logprobs, m.finish_reason, m.stop_token_id, m.cached_tokens,
                        m.prompt_tokens, m.error, m.index, m.kv_transfer)


def embedded_message(stream: int, out: EmbeddingOutput) -> Embedded:
    vectors = np.ascontiguousarray(out.embeddings, dtype="<f4")
    rows, dim = vectors.shape
    return Embedded(stream, rows, dim, vectors.tobytes(), out.prompt_tokens)


def embedding_output(m: Embedded) -> EmbeddingOutput:
    """The EmbeddingOutput of an Embedded; a payload that does not hold rows x dim floats raises ValueError."""
    vectors = np.frombuffer(m.data, dtype="<f4").reshape(m.rows, m.dim).astype(np.float32, copy=False)
    return EmbeddingOutput(vectors, m.prompt_tokens)


def media_messages(stream: int, out: MediaOutput, chunk_size: int = MEDIA_CHUNK_BYTES
                   ) -> Iterator[MediaChunk | MediaDone]:
    """The frames of a MediaOutput: each file's bytes in chunks of at most chunk_size (views, not copies), then
    one MediaDone with the metadata."""
    for i, f in enumerate(out.files):
        view = memoryview(f.data)
        for start in range(0, len(view), chunk_size):
            yield MediaChunk(stream, i, view[start:start + chunk_size])  # type: ignore[arg-type]  # msgspec: bin
    yield MediaDone(stream, [MediaFileInfo(f.content_type, f.extension, len(f.data)) for f in out.files],
                    out.seed, out.inference_time_s, out.steps, dict(out.extra))


def media_progress(msg: MediaStep) -> MediaProgress:
    return MediaProgress(msg.step, msg.total_steps)


class MediaAssembler:
    """Reassembles the MediaChunks of one stream; finish() checks every file against its announced size."""

    __slots__ = ("parts", "file")

    def __init__(self) -> None:
        self.parts: list[list[bytes]] = []
        self.file = -1

    def add(self, chunk: MediaChunk) -> None:
        """Append a chunk; ValueError when chunks arrive out of file order."""
        if chunk.file < self.file:
            raise ValueError(f"chunk of file {chunk.file} after a chunk of file {self.file}")
        while len(self.parts) <= chunk.file:
            self.parts.append([])
        self.file = chunk.file
        self.parts[chunk.file].append(chunk.data)

    def finish(self, done: MediaDone) -> MediaOutput:
        """The MediaOutput of the stream; ValueError when the chunks do not add up to the announced files."""
        if len(self.parts) > len(done.files):
            raise ValueError(f"chunks of {len(self.parts)} files for {len(done.files)} announced")
        files = []
        for i, info in enumerate(done.files):
            data = b"".join(self.parts[i]) if i < len(self.parts) else b""
            if len(data) != info.size:
                raise ValueError(f"file {i} has {len(data)} bytes, {info.size} announced")
            files.append(MediaFile(data, info.content_type, info.extension))
        self.parts.clear()
        return MediaOutput(files, done.seed, done.inference_time_s, done.steps, dict(done.extra))


# KV events carry a union of dataclasses; on the wire each is a short tuple led by a kind letter.
def batch_to_wire(b: KvEventBatch) -> tuple:
    events: list[Any] = []
    for e in b.events:
        if isinstance(e, BlockStored):
            events.append(("s", e.block_hashes, e.parent_block_hash, e.token_ids, e.block_size, e.lora_name,
                           e.media_hashes))
        elif isinstance(e, BlockRemoved):
            events.append(("r", e.block_hashes))
        else:
            events.append(("c",))
    return (b.worker_id, b.dp_rank, b.event_id, events, b.timestamp)


def batch_from_wire(t: Any, worker_id: int) -> KvEventBatch:
    """Rebuild a batch, re-tagged with the server-assigned worker_id."""
    _, dp_rank, event_id, events, ts = t
    out: list[Any] = []
    for e in events:
        kind = e[0]
        if kind == "s":
            out.append(BlockStored(list(e[1]), e[2], list(e[3]), e[4], e[5], [list(h) for h in e[6]]))
        elif kind == "r":
            out.append(BlockRemoved(list(e[1])))
        else:
            out.append(AllBlocksCleared())
    return KvEventBatch(worker_id, dp_rank, event_id, out, ts)
