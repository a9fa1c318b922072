"""`edgeml pack`: a bundle folder as one reproducible .tar.gz, and the safe way back into a folder.

The archive depends only on the bundle's file names, contents and executable bits: entries sorted,
every entry under `bundle/`, mtime 0, uid/gid 0 with empty owner names, modes 0644 or 0755, and a
gzip header with mtime 0 and no file name. Packing the same bundle twice gives the same bytes.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from pathlib import Path

from edgeml.bundle.folder import MANIFEST, has_manifest
from edgeml.errors import EdgemlError

TOP = "bundle"


def pack(bundle: Path, out: Path) -> Path:
    """Write `bundle` (a folder with manifest.json) to the archive `out`, atomically; return `out`."""
    bundle, out = Path(bundle), Path(out)
    if not has_manifest(bundle):         # packed as it is: whether it is intact is for `verify` to say
        raise EdgemlError(f"{bundle} is not an edgeml bundle (no {MANIFEST} in it)")
    entries = _entries(bundle)
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed, \
                tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for relative, path in entries:
                info = tarfile.TarInfo(f"{TOP}/{relative}" if relative else TOP)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                info.size = path.stat().st_size
                info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        os.replace(partial, out)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise EdgemlError(f"cannot write {out}: {e.strerror or e}") from e
    return out


def _entries(bundle: Path) -> list[tuple[str, Path]]:
    """(path inside the bundle, path here) of the folder itself and everything in it, sorted; only plain
    files and folders (a link or a device has no place in a bundle)."""
    entries = [("", bundle)]
    for path in bundle.rglob("*"):
        relative = path.relative_to(bundle).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise EdgemlError(f"{bundle}: '{relative}' is not a plain file or folder; a bundle holds only those")
        entries.append((relative, path))
    return sorted(entries)


def extract(archive: Path, into: Path) -> Path:
    """Extract an archive made by `pack` into the folder `into`; return the bundle folder in it.

    Refuses, naming the member, an absolute path, a `..` part, a path outside `bundle/`, a link and
    anything that is not a plain file or folder.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                reason = _unsafe(member)
                if reason:
                    raise EdgemlError(f"{archive}: refusing member '{member.name}': {reason}")
            tar.extractall(into, members, filter="data")
    except (OSError, EOFError, tarfile.TarError) as e:
        raise EdgemlError(f"cannot read {archive} as a .tar.gz: {e}") from None
    folder = Path(into) / TOP
    if not has_manifest(folder):
        raise EdgemlError(f"{archive} is not an edgeml bundle archive (no {TOP}/{MANIFEST} in it)")
    return folder


def _unsafe(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "a '..' in its path leaves the folder"
    if parts[0] != TOP:
        return f"outside {TOP}/"
    if member.issym() or member.islnk():
        return f"a link (to '{member.linkname}')"
    if not (member.isfile() or member.isdir()):
        return "a device, fifo or other special file"
    if stat.S_IMODE(member.mode) & (stat.S_ISUID | stat.S_ISGID):
        return "setuid/setgid mode"
    return None
