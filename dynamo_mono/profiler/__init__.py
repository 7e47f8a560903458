"""`dynamo-mono profile`: sweep an engine over prompt lengths and decode load, write Dynamo's planner profile."""
