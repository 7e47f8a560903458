"""The command connector runs the operator's program with the targets as arguments and environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from dynamo_mono.planner.connectors import CommandConnector


def _model() -> SimpleNamespace:
    return SimpleNamespace(name="my-model", pool=SimpleNamespace(instances={}))


SCRIPT = """
import json, os, sys
out = {"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("DYN_PLANNER_")}}
open(sys.argv[1], "w").write(json.dumps(out))
sys.exit(int(os.environ.get("EXIT", "0")))
"""


async def test_command_gets_the_targets(tmp_path: Path) -> None:
    script = tmp_path / "scale.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out.json"
    conn = CommandConnector(_model(), f"{sys.executable} {script} {out}", timeout=60)
    await conn.apply({"prefill": 2, "decode": 3}, "because")
    got = json.loads(out.read_text())
    assert got["argv"] == [str(out), "my-model", "prefill=2", "decode=3"]
    assert got["env"] == {"DYN_PLANNER_MODEL": "my-model", "DYN_PLANNER_REASON": "because",
                          "DYN_PLANNER_TARGET_PREFILL": "2", "DYN_PLANNER_TARGET_DECODE": "3"}
    assert conn.failures == 0


async def test_a_failing_or_missing_command_is_counted_not_raised(tmp_path: Path, monkeypatch) -> None:
    script = tmp_path / "scale.py"
    script.write_text(SCRIPT)
    monkeypatch.setenv("EXIT", "3")
    conn = CommandConnector(_model(), f"{sys.executable} {script} {tmp_path / 'o.json'}", timeout=60)
    await conn.apply({"agg": 1}, "r")
    assert conn.failures == 1
    missing = CommandConnector(_model(), str(tmp_path / "does-not-exist"), timeout=60)
    await missing.apply({"agg": 1}, "r")
    assert missing.failures == 1
