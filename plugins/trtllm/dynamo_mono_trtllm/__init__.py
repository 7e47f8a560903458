"""dynamo-mono engine plugin for TensorRT-LLM (LLM API, PyTorch backend)."""
