"""Where edgeml keeps what it can rebuild: the trained example model, and the intermediate work of runs.

Intermediate work (the exported ONNX model, each candidate's build) is stored by content hash:
the key is the sha256 of everything that determines the result (hashes of the input files and
data, the settings, the versions of edgeml and of the packages that made it), so a rerun, after a
crash or with the same inputs, restores it instead of redoing it. An entry is a folder
`entries/KIND-KEY/` with the files under `files/` and `meta.json`: the sha256 of each file and
the JSON the caller stored with them. Entries are written into a temporary folder and renamed
into place, so concurrent runs are safe (the loser of a race drops its copy). A restored file
that does not match meta.json, or a missing one, makes the entry a miss and deletes it: a
corrupted or half-deleted cache costs a rebuild, never a wrong result, and deleting the whole
folder is safe. After each write the least recently used entries are deleted until the entries
fit the size bound. Nothing is unpickled: entries hold plain files and JSON.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgeml.errors import EdgemlError
from edgeml.hashing import sha256_file
from edgeml.version import __version__

DEFAULT_MAX_BYTES = 5 * 1024 ** 3
STALE_SECONDS = 24 * 3600     # a temporary folder this old is a dead writer's
_PARTIAL = ".partial-"


def cache_dir() -> Path:
    """$EDGEML_CACHE_DIR, else $XDG_CACHE_HOME/edgeml, else ~/.cache/edgeml."""
    if os.environ.get("EDGEML_CACHE_DIR"):
        return Path(os.environ["EDGEML_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeml"


def max_bytes() -> int:
    """$EDGEML_CACHE_MAX_BYTES, else 5 GiB."""
    text = os.environ.get("EDGEML_CACHE_MAX_BYTES")
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        return int(text)
    except ValueError:
        raise EdgemlError(f"EDGEML_CACHE_MAX_BYTES={text!r} is not a number of bytes") from None


def entry_name(kind: str, **parts) -> str:
    """The entry for `kind` (e.g. export, build-onnxruntime-int8) made from `parts`, and by this edgeml.

    `parts` is plain JSON data: everything else that determines the result. The name ends in the
    sha256 of all of it in canonical form (sorted keys).
    """
    text = json.dumps({"kind": kind, "edgeml": code_version(), **parts}, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()}"


@functools.cache
def code_version() -> str:
    """edgeml's version and a hash of its source files, so that entries made by other code are not used."""
    h = hashlib.sha256()
    for package in ("edgeml", "edgeml.compress", "edgeml.targets"):
        folder = Path(importlib.util.find_spec(package).origin).parent   # not imported here
        for path in sorted(folder.rglob("*.py")):
            h.update(f"{package}/{path.relative_to(folder).as_posix()}|".encode())
            h.update(path.read_bytes())
    return f"{__version__}+{h.hexdigest()[:16]}"


class Cache:
    """The entries under FOLDER/entries; `Cache(None)` is a cache that is off (never hits, stores nothing)."""

    def __init__(self, folder: str | Path | None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = None if folder is None else Path(folder)
        self.max_bytes = max_bytes

    @property
    def entries(self) -> Path:
        return self.folder / "entries"

    def restore(self, name: str, dest: Path) -> dict | None:
        """Copy entry `name`'s files into the new folder `dest`; what was stored with them, or None on a miss."""
        if self.folder is None:
            return None
        entry = self.entries / name
        try:
            meta = json.loads((entry / "meta.json").read_text())
            shutil.copytree(entry / "files", dest)
            copied = {p.relative_to(dest).as_posix(): p for p in dest.rglob("*") if p.is_file()}
            intact = copied.keys() == meta["files"].keys() and all(
                sha256_file(path) == meta["files"][relative] for relative, path in copied.items())
            os.utime(entry)                       # recently used: evicted last
        except (OSError, ValueError, KeyError, TypeError, AttributeError):   # missing, or not what was written
            intact = False
        if not intact:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return meta["data"]

    def store(self, name: str, source: Path, data: dict) -> None:
        """Add the files in `source` as entry `name`, with `data` (JSON); then evict down to the bound.

        A write that fails (a full disk, a read-only folder) leaves the cache as it was and the run goes on.
        """
        if self.folder is None:
            return
        meta = {"data": data}
        tmp = None
        try:
            self.entries.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=_PARTIAL, dir=self.entries))
            shutil.copytree(source, tmp / "files")
            meta["files"] = {p.relative_to(tmp / "files").as_posix(): sha256_file(p)
                             for p in sorted((tmp / "files").rglob("*")) if p.is_file()}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))     # TypeError for data that is not JSON
            os.rename(tmp, self.entries / name)   # fails when another run stored it first: theirs is kept
            tmp = None
            self.evict()
        except OSError:
            pass
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def fetch(self, name: str, folder: Path, make: Callable[[], dict]) -> tuple[dict, bool]:
        """Entry `name` restored into `folder`, or `make()` run (it writes its files into `folder` and
        returns the JSON to keep with them) and stored: (that JSON, whether it was restored)."""
        data = self.restore(name, folder)
        if data is not None:
            return data, True
        data = make()
        self.store(name, folder, data)
        return data, False

    def evict(self) -> None:
        """Delete the least recently used entries until the rest fit in `max_bytes`; and dead writers'
        temporary folders."""
        entries = []
        for entry in self.entries.iterdir():
            try:
                used = entry.stat().st_mtime
                if entry.name.startswith(_PARTIAL):
                    if time.time() - used > STALE_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)
                    continue
                entries.append((used, _size(entry), entry))
            except FileNotFoundError:             # deleted by another run meanwhile
                continue
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                break
            shutil.rmtree(entry, ignore_errors=True)
            total -= size


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
