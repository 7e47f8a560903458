"""Adapter ids derived from names exactly as Dynamo does (lib/llm/src/utils/lora.rs::lora_name_to_id)."""

from __future__ import annotations

import blake3


def lora_id(name: str) -> int:
    """blake3(name), first 8 bytes as a big-endian integer, & 0x7FFFFFFF; 0 becomes 1 ("test_lora" -> 1983627077)."""
    v = int.from_bytes(blake3.blake3(name.encode()).digest()[:8], "big") & 0x7FFFFFFF
    return v or 1
