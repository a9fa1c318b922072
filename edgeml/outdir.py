"""Atomic output folders.

A run writes into a hidden staging folder beside OUT, `.OUT.partial-PID`, and moves it into
place only when it is complete. Whenever a run is interrupted, even by kill -9, OUT is
therefore absent or complete; when replacing (force), it is the old or the new output:
on Linux the two folders are swapped in one step (renameat2 with RENAME_EXCHANGE). Where
that is not available, OUT is moved aside to `.OUT.old-PID` for the moment between two
renames, and the next run into OUT puts it back if the process died there. Each run first
removes the leftovers of OUT's earlier runs whose process no longer exists.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

from edgeml.errors import OutputError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2():
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _gone(pid: int) -> bool:
    """No process has this id; or it is ours, so a folder named with it is an earlier process's."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        pass
    return False


class AtomicOutput:
    """`with AtomicOutput(out, force) as staging:` write into staging; OUT appears on success."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.force = force
        self.staging: Path | None = None
        self._created_parents: list[Path] = []

    def __enter__(self) -> Path:
        self._tidy()
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
            self.staging = self._sibling("partial")
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
        if not self.out.exists():
            os.rename(self.staging, self.out)
            return
        if not _exchange(self.staging, self.out):
            old = self._sibling("old")
            os.rename(self.out, old)
            os.rename(self.staging, self.out)
            os.rename(old, self.staging)
        shutil.rmtree(self.staging, ignore_errors=True)

    def _sibling(self, kind: str) -> Path:
        return self.out.parent / f".{self.out.name}.{kind}-{os.getpid()}"

    def _tidy(self) -> None:
        """Remove the staging folders of OUT's dead runs; restore OUT from a dead run's `.old` copy."""
        prefix = f".{self.out.name}."
        try:
            names = [p.name for p in self.out.parent.iterdir() if p.name.startswith(prefix)]
        except OSError:
            return
        for name in names:
            kind, _, pid = name[len(prefix):].rpartition("-")
            if kind not in ("partial", "old") or not pid.isdigit() or not _gone(int(pid)):
                continue
            leftover = self.out.parent / name
            if kind == "old" and not os.path.lexists(self.out):
                try:
                    os.rename(leftover, self.out)
                    continue
                except OSError:
                    pass
            shutil.rmtree(leftover, ignore_errors=True)

    def _remove_created_parents(self) -> None:
        for p in reversed(self._created_parents):
            try:
                p.rmdir()
            except OSError:
                pass
