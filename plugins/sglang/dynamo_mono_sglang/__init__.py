"""dynamo-mono SGLang engine plugin (written against sglang 0.5.23; see docs/engines.md)."""
