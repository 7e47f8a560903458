"""The SLA planner (`serve --planner`): scales a model's engine instances to meet TTFT / ITL targets."""
