"""FAKE sglang.srt (see sglang/__init__.py)."""
