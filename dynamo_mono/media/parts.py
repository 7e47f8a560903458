"""Media content parts of chat requests as one typed value, whatever API they came from (OpenAI image_url /
video_url / audio_url / input_audio, Anthropic image blocks, Responses input_image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dynamo_mono.serving.errors import InvalidRequest

# OpenAI-shaped content part type -> the medium it carries.
MEDIA_PART_TYPES = {"image_url": "image", "video_url": "video", "audio_url": "audio", "input_audio": "audio"}
# input_audio.format values (OpenAI: wav, mp3); the decoder reads these containers.
INPUT_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}
# image detail: "low" = seen at most 512 x 512; the others = full size (within the model's own max_pixels)
DETAILS = ("auto", "low", "high", "original")


@dataclass(frozen=True, slots=True)
class MediaPart:
    """One media content part of a conversation: its medium, the URL to fetch (data:, https:, http:, file:) and
    where it sits in the client's request (named by every refusal)."""

    kind: str  # "image" | "video" | "audio"
    url: str
    where: str  # e.g. "messages[0].content[1].image_url" (OpenAI), "messages.0.content.1" (Anthropic)
    detail: str = "auto"  # images: "low": the model sees it scaled down to 512 x 512 at most

    def refuse(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"{self.where}: {why}", param=self.where)


def is_media_part(part: Any) -> bool:
    return isinstance(part, MediaPart) or (isinstance(part, Mapping) and part.get("type") in MEDIA_PART_TYPES)


def media_part(part: Mapping[str, Any], where: str) -> MediaPart:
    """The MediaPart of an OpenAI-shaped content part at `where` (e.g. "messages[0].content[1]"); InvalidRequest
    naming the field on a malformed one."""
    kind = str(part.get("type"))
    medium = MEDIA_PART_TYPES.get(kind)
    if medium is None:
        raise InvalidRequest(f"{where}: unsupported content part type '{kind}'", param=where)
    field = f"{where}.{kind}"
    value = part.get(kind)
    if kind == "input_audio":
        if not isinstance(value, Mapping) or not isinstance(value.get("data"), str):
            raise InvalidRequest(f"{field}: must be an object with base64 'data' and a 'format'", param=field)
        fmt = value.get("format")
        if fmt not in INPUT_AUDIO_FORMATS:
            raise InvalidRequest(f"{field}.format: must be one of {', '.join(INPUT_AUDIO_FORMATS)}, not {fmt!r}",
                                 param=f"{field}.format")
        return MediaPart("audio", f"data:{INPUT_AUDIO_FORMATS[fmt]};base64,{value['data']}", field)
    if isinstance(value, str):  # a bare URL string, as some clients send
        url, detail = value, None
    elif isinstance(value, Mapping) and isinstance(value.get("url"), str):
        url, detail = value["url"], value.get("detail")
    else:
        raise InvalidRequest(f"{field}: must be an object with a 'url' (an https:// or data: URL)", param=field)
    if not url.strip():
        raise InvalidRequest(f"{field}.url: must not be empty", param=f"{field}.url")
    if detail is not None and (medium != "image" or detail not in DETAILS):
        raise InvalidRequest(f"{field}.detail: must be one of {', '.join(DETAILS)}" if medium == "image"
                             else f"{field}.detail: applies to images only", param=f"{field}.detail")
    return MediaPart(medium, url, field, detail or "auto")
