"""Engine conformance kit: one parametrised suite every engine plugin passes through the real HTTP stack.

Run it against an engine (see docs/engines.md):

    python -m dynamo_mono.testing --target mocker
    python -m dynamo_mono.testing --target my_pkg.kit:TARGET -- -k stream

A target is a `KitTarget` (engine_kit.py): the `dynamo-mono serve` arguments that start the engine, extra env and
PYTHONPATH entries, and the capabilities the engine claims (each capability enables the cases that check it).
"""

from dynamo_mono.testing.engine_kit import CAPABILITIES, MOCKER_TARGET, KitTarget, resolve_target

__all__ = ["CAPABILITIES", "KitTarget", "MOCKER_TARGET", "resolve_target"]
