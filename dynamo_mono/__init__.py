"""dynamo-mono: a one-process LLM inference server with pluggable engines."""

__version__ = "0.1.0"
