"""A worker's copies of the adapters the server sends it (LoadLora files), one directory per instance and adapter."""

from __future__ import annotations

import os
import re
import shutil
import tempfile


class LoraFiles:
    """Writes adapter files under a private temporary directory and removes them on unload / close."""

    def __init__(self) -> None:
        self.root: str | None = None

    def _dir(self, instance: int, name: str, lora_id: int) -> str:
        if self.root is None:
            self.root = tempfile.mkdtemp(prefix="dynamo-loras-")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
        return os.path.join(self.root, str(instance), f"{lora_id:08x}-{safe}")

    def write(self, instance: int, name: str, lora_id: int, files: dict[str, bytes]) -> str:
        """The directory holding `files` (ValueError for a file name that is not a plain name)."""
        for fname in files:
            if not fname or fname in (".", "..") or "/" in fname or "\\" in fname or "\0" in fname:
                raise ValueError(f"adapter file name {fname!r} is not a plain file name")
        path = self._dir(instance, name, lora_id)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        for fname, data in files.items():
            with open(os.path.join(path, fname), "wb") as f:
                f.write(data)
        return path

    def remove(self, instance: int, name: str, lora_id: int | None) -> None:
        if self.root is None:
            return
        base = os.path.join(self.root, str(instance))
        if not os.path.isdir(base):
            return
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]
        for entry in os.listdir(base):
            if entry.endswith("-" + safe) and (lora_id is None or entry.startswith(f"{lora_id:08x}-")):
                shutil.rmtree(os.path.join(base, entry), ignore_errors=True)

    def close(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
