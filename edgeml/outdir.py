"""Atomic output folders: everything is written to a hidden folder beside the destination and
renamed into place at the end, so OUT is either absent, the old one, or complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edgeml.errors import OutputError


class AtomicOutput:
    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.force = force
        self.staging: Path | None = None
        self._created_parents: list[Path] = []

    def __enter__(self) -> Path:
        if self.out.exists() and not self.force:
            raise OutputError(f"{self.out} already exists; choose another -o, or pass --force to replace it")
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out} exists and is not a folder; choose another -o")
        parent = self.out.parent
        missing = []
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            for p in reversed(missing):
                p.mkdir()
                self._created_parents.append(p)
            self.staging = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
            self.staging.mkdir()
        except OSError as e:
            self._remove_created_parents()
            raise OutputError(f"cannot write the output folder {self.out}: {e.strerror or e}") from e
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._remove_created_parents()
            return
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.rename(self.out, old)
        os.rename(self.staging, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _remove_created_parents(self) -> None:
        for p in reversed(self._created_parents):
            try:
                p.rmdir()
            except OSError:
                pass
