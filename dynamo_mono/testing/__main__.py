"""`python -m dynamo_mono.testing --target NAME|module:attr [-- pytest args]`: run the engine kit against targets."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import pytest

    p = argparse.ArgumentParser(prog="python -m dynamo_mono.testing", description=__doc__)
    p.add_argument("--target", action="append", required=True,
                   help="built-in target name (mocker) or module:attribute of a KitTarget; repeat for several")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = p.parse_args(argv)
    opts = [f"--engine-kit-target={t}" for t in args.target]
    return int(pytest.main(["-p", "dynamo_mono.testing.pytest_plugin", *opts, "--pyargs",
                            "dynamo_mono.testing.run_kit", "-p", "no:cacheprovider", *args.pytest_args]))


if __name__ == "__main__":
    sys.exit(main())
