"""The journal of finished cells: OUT/journal/<cell>.json, one file per cell, each written atomically.

A cell's entry holds its result row and the digest of its definition (spec.Cell.digest), so `--resume` skips
exactly the cells whose definition has not changed since they finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgeml.sweep.spec import Cell, SweepError


def write_atomic(path: Path, text: str) -> None:
    """`text` into `path`: written to a temporary file beside it, synced, and renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Journal:
    def __init__(self, out: Path, resume: bool):
        """The journal of the sweep in `out`; without `resume`, `out` must be new or empty."""
        self.folder = out / "journal"
        if not resume and out.exists() and any(out.iterdir()):
            raise SweepError(f"{out} already holds files: pass --resume to continue the sweep there, or choose "
                             "another -o")

    def finished(self, cells: list[Cell]) -> dict[str, dict]:
        """cell id -> its journaled row, for the cells whose entry matches their current definition."""
        rows = {}
        for cell in cells:
            path = self._path(cell)
            try:
                entry = json.loads(path.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                raise SweepError(f"journal entry {path} cannot be read ({e}): delete it to run the cell again") \
                    from None
            if entry.get("digest") == cell.digest:
                rows[cell.id] = entry["row"]
        return rows

    def record(self, cell: Cell, row: dict) -> None:
        write_atomic(self._path(cell), json.dumps({"digest": cell.digest, "row": row}, indent=1) + "\n")

    def _path(self, cell: Cell) -> Path:
        return self.folder / (cell.id.replace("/", "~") + ".json")
