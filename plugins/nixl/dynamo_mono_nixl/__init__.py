"""dynamo-mono NIXL plugin: KV blocks move by one-sided RDMA-style READs (UCX backend) between processes."""
