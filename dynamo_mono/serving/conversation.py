"""Chat messages as a chat template sees them: text parts joined, media parts collected as typed MediaParts.

A message whose content is a list of text parts becomes one string (text joined by newlines: vLLM's "string"
content format, which every template renders). A message with media keeps a list, in which each media part is
`{"type": "image" | "video" | "audio"}`: what Hugging Face multimodal templates test to emit their own placeholder
(<|vision_start|><|image_pad|><|vision_end|>, <image>, ...). Templates that render no such part get the
`fallback` form instead: the string, with the model's placeholder text where each media part was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from dynamo_mono.serving.errors import InvalidRequest
from dynamo_mono.media.parts import MediaPart, is_media_part, media_part


@dataclass(slots=True)
class Conversation:
    """The messages with their media taken out: `parts` in order of appearance."""

    messages: list[dict]
    parts: list[MediaPart] = field(default_factory=list)
    # message index -> its content as text pieces (str) and media slots (int: index into parts)
    _mixed: dict[int, list[str | int]] = field(default_factory=dict)

    def template_messages(self) -> list[dict]:
        """Messages for a template that renders media parts itself ({"type": kind} where each medium was)."""
        if not self._mixed:
            return self.messages
        out = list(self.messages)
        for i, pieces in self._mixed.items():
            content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": self.parts[p].kind}
                       for p in pieces]
            out[i] = {**out[i], "content": content}
        return out

    def fallback_messages(self, placeholders: Mapping[str, str]) -> list[dict]:
        """Messages for a template that renders only text: each medium's placeholder text where it was."""
        out = list(self.messages)
        for i, pieces in self._mixed.items():
            text = "\n".join(p if isinstance(p, str) else placeholders[self.parts[p].kind] for p in pieces)
            out[i] = {**out[i], "content": text}
        return out


def conversation(messages: list[dict]) -> Conversation:
    """Split the messages' content parts: text joined, media typed (OpenAI-shaped media parts are parsed here,
    named `messages[i].content[j]`; other APIs hand MediaParts already named in their own terms). Any other part
    type is refused by name."""
    conv = Conversation(list(messages))
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        pieces: list[str | int] = []
        texts: list[str] = []
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text") or ""
                pieces.append(text)
                texts.append(text)
            elif is_media_part(part):
                mp = part if isinstance(part, MediaPart) else media_part(part, f"messages[{i}].content[{j}]")
                pieces.append(len(conv.parts))
                conv.parts.append(mp)
            else:
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                where = f"messages[{i}].content[{j}]"
                raise InvalidRequest(f"{where}: unsupported content part type '{kind}'", param=where)
        if len(texts) == len(pieces):
            conv.messages[i] = {**m, "content": "\n".join(texts)}
        else:
            conv._mixed[i] = pieces
    return conv
