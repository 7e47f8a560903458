"""dynamo_mono.api is the whole plugin surface: every exported name imports, in-repo plugins import nothing else."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import dynamo_mono.api as api

ROOT = Path(__file__).resolve().parents[1]


def test_every_name_in_all_is_importable() -> None:
    assert len(api.__all__) == len(set(api.__all__))
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from dynamo_mono.api import *", namespace)
    assert set(api.__all__) <= set(namespace)


def test_the_names_the_plugin_guide_promises() -> None:
    promised = {"EngineRequest", "EngineOutput", "SamplingParams", "StopConditions", "TokenLogprob", "ModelCard",
                "LoadMetrics", "Engine", "EngineArgs", "EngineError", "InstanceKey", "BlockStored", "BlockRemoved",
                "AllBlocksCleared", "KvEventBatch", "Option", "hookimpl", "KvTransport", "KvTransferError",
                "ReasoningParser", "ToolCallParser", "ToolCallDelta"}
    assert promised <= set(api.__all__)


def _plugin_files() -> list[Path]:
    files = sorted(p for p in (ROOT / "plugins").glob("*/**/*.py") if "build" not in p.parts)
    return [*files, ROOT / "mocker" / "plugin.py"]


def _internal_imports(path: Path) -> list[str]:
    """dynamo_mono.* modules other than dynamo_mono.api that a file imports (top level or lazily)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if (n == "dynamo_mono" or n.startswith("dynamo_mono.")) and n != "dynamo_mono.api"]
    return found


@pytest.mark.parametrize("path", _plugin_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_in_repo_plugins_import_only_the_api(path: Path) -> None:
    assert _internal_imports(path) == [], f"{path.relative_to(ROOT)} imports internal modules"


def test_plugin_files_are_found() -> None:
    rel = [p.relative_to(ROOT).parts for p in _plugin_files()]
    names = {parts[1] for parts in rel if parts[0] == "plugins"}
    assert {"example", "vllm", "nixl"} <= names


def test_the_import_check_catches_internal_imports(tmp_path: Path) -> None:
    f = tmp_path / "p.py"
    f.write_text("import dynamo_mono_x\nfrom dynamo_mono.api import hookimpl\n"
                 "def f():\n    from dynamo_mono.engine import ModelCard\n")
    assert _internal_imports(f) == ["dynamo_mono.engine"]


def test_api_import_does_not_pull_the_server() -> None:
    import subprocess

    code = ("import sys, dynamo_mono.api; "
            "print(','.join(m for m in ('aiohttp', 'dynamo_mono.server', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == ""
