"""What media the mocker's chat models take (--mocker-input-modalities) and how their items become tokens."""

from __future__ import annotations

from typing import Any

from dynamo_mono.config import ConfigError
from dynamo_mono.engine import MEDIA_INPUT_KINDS, MediaTokens
from mocker.options import MEDIA_INPUT_MEDIUM_OPTIONS, MEDIA_INPUT_OPTIONS

_DEFAULTS = {o.name: o.default for o in MEDIA_INPUT_OPTIONS}


def parse_modalities(raw: str | None) -> list[str]:
    """["text", ...media] from "text,image,..." (order kept, text first); ConfigError on an unknown medium."""
    out = ["text"]
    for name in (raw or "text").split(","):
        name = name.strip().lower()
        if not name or name in out:
            continue
        if name not in MEDIA_INPUT_KINDS:
            raise ConfigError(f"--mocker-input-modalities: unknown medium {name!r}; choose from text, "
                              f"{', '.join(MEDIA_INPUT_KINDS)}")
        out.append(name)
    return out


def media_input(opts: dict[str, Any], tokenizer: Any, kind: str = "chat") -> tuple[list[str], dict[str, MediaTokens]]:
    """(card.modalities, card.media_input) from the options; ConfigError for a placeholder the tokenizer does not
    have as one token, or a medium option set for a medium the model does not take."""
    modalities = parse_modalities(opts.get("mocker_input_modalities"))
    media = [m for m in modalities if m != "text"]
    if media and kind != "chat":
        raise ConfigError(f"--mocker-input-modalities={opts['mocker_input_modalities']} applies to chat models only")
    for name, needs in MEDIA_INPUT_MEDIUM_OPTIONS.items():
        if opts.get(name, _DEFAULTS[name]) != _DEFAULTS[name] and not any(m in media for m in needs):
            raise ConfigError(f"--{name.replace('_', '-')}={opts[name]!r} applies to {' / '.join(needs)} input; "
                              f"add it to --mocker-input-modalities")
    specs: dict[str, MediaTokens] = {}
    for medium in media:
        token = opts.get(f"mocker_{medium}_token") or _DEFAULTS[f"mocker_{medium}_token"]
        token_id = tokenizer.token_to_id(token) if tokenizer is not None else None
        if token_id is None or tokenizer.encode(token) != [token_id]:
            raise ConfigError(f"--mocker-{medium}-token={token!r} is not a single token of the model's tokenizer "
                              f"(the embedded tiny ChatML has <|image_pad|>, <|video_pad|>, <|audio_pad|>)")
        try:
            specs[medium] = MediaTokens(
                token_id=token_id, token=token, patch_size=opts["mocker_patch_size"],
                merge_size=opts["mocker_merge_size"], min_pixels=opts["mocker_min_pixels"],
                max_pixels=opts["mocker_max_pixels"], tokens_per_second=opts["mocker_audio_tokens_per_second"])
        except ValueError as exc:
            raise ConfigError(f"mocker media input: {exc}") from None
    return modalities, specs
