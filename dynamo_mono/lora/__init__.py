"""LoRA adapters: ids, source checks, placement (HRW), the adapter manager and its load estimator."""
