"""Registers the mocker engine and media generators with the plugin system (entry point `mocker = "mocker.plugin"`)."""

from __future__ import annotations

from typing import Callable

from dynamo_mono.api import hookimpl
from mocker.engine import create_engine
from mocker.media import create_media_generator
from mocker.options import MOCKER_MEDIA_OPTIONS, MOCKER_OPTIONS


@hookimpl
def register_engines(register: Callable[..., None]) -> None:
    register(
        "mocker",
        create_engine,
        options=MOCKER_OPTIONS,
        description="simulated vLLM-style engine (continuous batching, prefix-cached paged KV), no GPU needed",
        kinds=("chat", "embedding"),
    )


_MEDIA = {
    "image": "simulated image model: deterministic colour patterns in timed denoising steps, no GPU needed",
    "video": "simulated video model: moving colour patterns (image-to-video from a reference), no GPU needed",
    "audio": "simulated speech model: deterministic tones per voice, speed and seed, no GPU needed",
}


@hookimpl
def register_modalities(register: Callable[..., None]) -> None:
    for kind, description in _MEDIA.items():
        register(kind, "mocker", create_media_generator, options=MOCKER_MEDIA_OPTIONS, description=description)
