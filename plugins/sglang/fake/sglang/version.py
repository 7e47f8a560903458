"""FAKE sglang version (see sglang/__init__.py)."""

__version__ = "0.5.23"
