"""Request models of the media routes (OpenAI's shapes with Dynamo's `nvext`): images, videos, speech.

Validated once at the edge; fields the server does not act on are not in the models (extra="forbid" answers
400 naming them) or accept only their neutral value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator


def _nonblank(v: str, name: str) -> str:
    if not v.strip():
        raise ValueError(f"{name} must not be empty")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DenoisingNvExt(_Strict):
    """Dynamo's nvext for diffusion requests."""

    negative_prompt: StrictStr | None = None
    num_inference_steps: StrictInt | None = Field(default=None, ge=1)
    guidance_scale: float | None = Field(default=None, ge=0.0)
    seed: StrictInt | None = Field(default=None, ge=0)


class VideoNvExt(DenoisingNvExt):
    fps: StrictInt | None = Field(default=None, ge=1)
    num_frames: StrictInt | None = Field(default=None, ge=1)


class SpeechNvExt(DenoisingNvExt):
    seconds: float | None = Field(default=None, gt=0.0)  # duration (text-to-audio models); default: from the text


class CreateImageRequest(_Strict):
    """POST /v1/images/generations body."""

    prompt: StrictStr
    model: StrictStr | None = None  # None: the one image model served
    n: StrictInt = Field(default=1, ge=1, le=10)
    size: StrictStr | None = None  # "WxH" or "auto" (the model's default size)
    response_format: Literal["url", "b64_json"] | None = None  # None: url, as OpenAI
    output_format: Literal["png", "jpeg", "webp"] | None = None  # None: png
    # Only the quality every output has (no other quality tier is implemented).
    quality: Literal["auto", "standard"] | None = None
    stream: Literal[False] | None = None  # partial images are not streamed: the response holds the finished ones
    user: StrictStr | None = None  # an end-user id for the caller's own records; nothing to act on here
    priority: StrictInt | None = None  # lower = more urgent (admission queues)
    nvext: DenoisingNvExt | None = None

    _prompt = field_validator("prompt")(classmethod(lambda cls, v: _nonblank(v, "prompt")))


class CreateVideoRequest(_Strict):
    """POST /v1/videos body (synchronous, as Dynamo: the response is the finished video)."""

    prompt: StrictStr
    model: StrictStr
    seconds: float | StrictStr | None = None  # OpenAI sends a string ("4"); Dynamo an integer
    size: StrictStr | None = None
    response_format: Literal["url", "b64_json"] | None = None  # None: url
    input_reference: StrictStr | None = None  # an image (data: URL or https URL) to start from
    user: StrictStr | None = None
    priority: StrictInt | None = None
    nvext: VideoNvExt | None = None

    _prompt = field_validator("prompt")(classmethod(lambda cls, v: _nonblank(v, "prompt")))

    @field_validator("seconds")
    @classmethod
    def _seconds(cls, v: float | str | None) -> float | None:
        if v is None:
            return None
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"seconds must be a number, not {v!r}") from None
        if not f > 0 or f != f or f == float("inf"):
            raise ValueError("seconds must be > 0")
        return f


class CreateSpeechRequest(_Strict):
    """POST /v1/audio/speech body."""

    input: StrictStr
    model: StrictStr | None = None  # None: the one audio model served
    voice: StrictStr | None = None  # None: the model's first voice
    response_format: Literal["wav", "flac", "mp3", "opus", "pcm", "aac"] | None = None  # None: wav
    speed: float | None = Field(default=None, ge=0.25, le=4.0)
    stream_format: Literal["audio"] | None = None  # the whole file in one response (SSE is not offered)
    user: StrictStr | None = None
    priority: StrictInt | None = None
    nvext: SpeechNvExt | None = None

    _input = field_validator("input")(classmethod(lambda cls, v: _nonblank(v, "input")))


def _op(path: str, op_id: str, summary: str, schema: str, ok: dict) -> dict:
    return {path: {"post": {
        "operationId": op_id, "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}},
        "responses": {"200": ok, **{str(c): {"description": "Error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
            for c in (400, 401, 404, 413, 415, 429, 500, 503, 504)}}}}}


CreateImageRequest.__openapi_paths__ = _op(  # type: ignore[attr-defined]
    "/v1/images/generations", "createImage", "Generate images (image models)", "CreateImageRequest",
    {"description": "{created, data: [{b64_json | url, revised_prompt}]}", "content": {"application/json": {}}})
CreateVideoRequest.__openapi_paths__ = _op(  # type: ignore[attr-defined]
    "/v1/videos", "createVideo", "Generate a video, synchronously (video models)", "CreateVideoRequest",
    {"description": "{id, object: video, status: completed, data: [{url | b64_json}], ...}",
     "content": {"application/json": {}}})
CreateSpeechRequest.__openapi_paths__ = _op(  # type: ignore[attr-defined]
    "/v1/audio/speech", "createSpeech", "Generate audio from text (audio models)", "CreateSpeechRequest",
    {"description": "The audio file", "content": {"audio/wav": {}, "audio/flac": {}, "audio/mpeg": {},
                                                 "audio/pcm": {}, "audio/ogg": {}}})
