"""The mocker: a simulated vLLM-v1-style engine (continuous batching, paged prefix-cached KV) without GPU."""
