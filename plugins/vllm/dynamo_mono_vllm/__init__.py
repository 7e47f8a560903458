"""dynamo-mono vLLM engine plugin."""
