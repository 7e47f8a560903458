"""The media-generation seam: what the server hands a media generator, what it yields back, and its protocol.

A modality plugin registers a factory (`register_modalities(register)`: register(kind, name, factory, ...)) that
builds a MediaGenerator for one model of kind image | video | audio from EngineArgs. The server validates every
request against the instance's card (`ModelCard.media`, a MediaLimits) and fills the defaults, so a generator only
sees values inside its limits. The generator runs its work off the event loop (a thread or a process), yields a
MediaProgress per denoising step and one MediaOutput at the end, with the files already encoded
(dynamo_mono.media.encode does the encoding: call it on the generator's own thread). Closing the iterator (the
client went away, a timeout) must stop the work at the next step and free the slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dynamo_mono.engine import KvEventSink, LoadMetrics, ModelCard
    from dynamo_mono.kv_events import KvEventBatch


@dataclass(slots=True)
class MediaRequest:
    """One media request as the generator sees it, every value resolved and checked. Generators never modify it.

    Output i of a request with seed s is made with seed s + i, so a request is reproducible from its seed and
    n outputs of one request differ."""

    request_id: str
    kind: str  # "image" | "video" | "audio"
    prompt: str  # the text prompt (images, video) or the text to speak / describe (audio `input`)
    output_format: str  # "png" | "jpeg" | "webp" (image), "mp4" (video), "wav" | "flac" | "mp3" | "pcm" (audio)
    n: int = 1
    seed: int | None = None  # None: the generator picks one (and reports it in MediaOutput.seed)
    # images and video
    width: int = 0
    height: int = 0
    num_inference_steps: int = 0
    guidance_scale: float | None = None  # None: the generator's default
    negative_prompt: str | None = None
    # video
    num_frames: int = 0
    fps: int = 0
    input_reference: bytes | None = None  # an encoded image (PNG / JPEG / WebP) to start from (image-to-video)
    # audio
    seconds: float = 0.0  # duration of the audio to make
    voice: str | None = None
    speed: float = 1.0
    # serving
    model: str = ""
    priority: int = 0  # in the generator's own convention, as for EngineRequest
    worker_id: int | None = None  # routing pin
    dp_rank: int | None = None  # set by the pool to the rank it chose before dispatch


@dataclass(slots=True)
class MediaProgress:
    """One denoising step done (step counts from 1 to total_steps, per batch of the request)."""

    step: int
    total_steps: int


@dataclass(slots=True)
class MediaFile:
    """One encoded output: its bytes, MIME type and file extension."""

    data: bytes
    content_type: str  # "image/png", "video/mp4", "audio/wav", ...
    extension: str  # "png", "mp4", "wav", ...


@dataclass(slots=True)
class MediaOutput:
    """The end of a media request: request.n files in order, and the seed output 0 was made with."""

    files: list[MediaFile]
    seed: int | None = None
    inference_time_s: float = 0.0  # time the generator spent on the request (queueing at the instance excluded)
    steps: int = 0  # denoising steps run per output
    extra: dict[str, float] = field(default_factory=dict)  # generator-specific timings for logs (never API fields)


@runtime_checkable
class MediaGenerator(Protocol):
    """A media generator instance (card.kind "image" | "video" | "audio"): the Engine shape with media results."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def model_card(self) -> "ModelCard":
        """name, kind, media (MediaLimits); block_size / max_model_len are unused for media (give 1 and 0)."""
        ...

    def generate_media(self, request: MediaRequest) -> AsyncIterator[MediaProgress | MediaOutput]:
        """Progress per denoising step, then one MediaOutput. aclose() / cancellation stops at the next step.
        Raise dynamo_mono.engine.EngineError on failure (retryable=False when the request itself is at fault)."""
        ...

    async def abort(self, request_id: str) -> None: ...

    def set_kv_event_sink(self, sink: "KvEventSink | None") -> None:
        """Media generators publish no KV events: accept and drop the sink."""
        ...

    def kv_snapshot(self) -> "list[KvEventBatch]": ...

    def load_metrics(self) -> "list[LoadMetrics]":
        """running = requests generating, waiting = requests queued at the instance."""
        ...

    def healthy(self) -> bool: ...
