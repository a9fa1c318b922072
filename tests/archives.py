"""Archives that try to leave the folder they are extracted into, for the extraction tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def malicious(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    """A bundle archive holding a manifest and `member`."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("bundle/manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info
