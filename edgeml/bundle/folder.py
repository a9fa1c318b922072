"""A bundle as it lies on disk: a folder and its manifest.json, read and checked once.

`Bundle.open` reads the manifest and checks what the command that opens it relies on; everything
after that (the files it lists, their sha256 and size, the files added since, the entry file, the
artifact opened with its runtime) is read from the `Bundle`. `edgeml verify`, `ship`, `profile`
and `build-engine` open bundles this way; `pack` only needs to know a folder is one (`has_manifest`),
since it packs a bundle as it is, intact or not, for `verify` to judge. edgeml.bundle.write makes
bundles.

How strictly a manifest is checked depends on the command, as each accepts what it can use:
`verify` insists on this edgeml's format and judges the rest against manifest.schema.json (a
failed check, exit 1); `ship` and `profile` need only the fields they read, so a device can take a
bundle from an older or newer edgeml; `build-engine` reads the few build settings it needs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeml.errors import EdgemlError, first_line
from edgeml.hashing import sha256_file
from edgeml.runtimes.base import Artifact, Backend, Runner

FORMAT_VERSION = 3
MANIFEST = "manifest.json"
HERE = Path(__file__).parent                 # manifest.schema.json (package data)
FIELDS = ("files", "entry", "backend", "candidate")     # what ship and profile read
LANGUAGE_MODEL_FIELDS = ("files", "runtime", "model")   # what ship reads of a language model's bundle
MISSING = ("missing", "not a plain file")   # FileCheck.problem of a listed file that is not there to read


def schema() -> dict:
    """The manifest's format: manifest.schema.json (JSON Schema 2020-12) with the backend names of the runtime
    registry (edgeml.runtimes.manifest_schema_backends) as backend/name's enum; the file lists none of its own."""
    from edgeml.runtimes import manifest_schema_backends

    loaded = json.loads((HERE / "manifest.schema.json").read_text())
    loaded["properties"]["backend"]["properties"]["name"]["enum"] = manifest_schema_backends()
    return loaded


def has_manifest(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


@dataclass(frozen=True)
class Listed:
    """A file the manifest lists: its path in the bundle, sha256 and size (None where a manifest omits it)."""
    path: str
    sha256: str
    size: int | None


@dataclass(frozen=True)
class FileCheck:
    """One file of the bundle against its manifest. `problem` is None when it is as listed (or, not listed,
    is one a device adds), else missing, not a plain file, truncated, grown, changed or added."""
    path: str
    problem: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.problem is None


class Bundle:
    """A bundle folder and its manifest (a dict, as read from manifest.json)."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = Path(folder)
        self.manifest = manifest

    @classmethod
    def open(cls, folder: Path | str, *, fields: bool = False, current: bool = False) -> Bundle:
        """Read FOLDER/manifest.json; a one-line EdgemlError when it is not a bundle's manifest.

        fields: it must have FIELDS (ship, profile). current: it must be this edgeml's format,
        "edgeml-bundle" version FORMAT_VERSION (verify, which then judges `schema_error`).
        """
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise EdgemlError(f"{folder} is not an edgeml bundle (no {MANIFEST} in it): give OUT/bundle of "
                              "`edgeml optimize`")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EdgemlError(f"cannot read {path}: {first_line(e)}") from None
        if not isinstance(manifest, dict):
            raise EdgemlError(f"{path} is not an edgeml bundle manifest")
        needed = LANGUAGE_MODEL_FIELDS if manifest.get("kind") == "language-model" else FIELDS
        if fields and not set(needed) <= manifest.keys():
            raise EdgemlError(f"{path} is not an edgeml bundle manifest ({', '.join(needed[:-1])} or {needed[-1]} "
                              "missing)")
        if current:
            if manifest.get("format") != "edgeml-bundle":
                raise EdgemlError(f"{path} is not an edgeml bundle manifest")
            if manifest.get("format_version") != FORMAT_VERSION:
                raise EdgemlError(f"{path} has format {manifest.get('format_version')}; this edgeml verifies format "
                                  f"{FORMAT_VERSION}: rebuild the bundle with `edgeml optimize`")
        return cls(Path(folder), manifest)

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.folder / MANIFEST

    @functools.cached_property
    def schema_error(self) -> str | None:
        """Why the manifest does not match manifest.schema.json (the best match's place and first line), or None."""
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match

        error = best_match(Draft202012Validator(schema()).iter_errors(self.manifest))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        return f"does not match its schema at {where}: {first_line(error)}"

    @property
    def language_model(self) -> bool:
        """A language model's bundle (edgeml.bundle.language_model): run.py --verify, no entry or backend."""
        return self.manifest.get("kind") == "language-model"

    @property
    def self_check(self) -> str:
        """run.py's option that checks the bundle against its reference: a language model's `--verify` (its
        reference answers, token for token), else `--check` (the reference vectors, within the tolerance)."""
        return "--verify" if self.language_model else "--check"

    @property
    def reference_file(self) -> str | None:
        """The reference that self-check reads, as a path in the bundle (None when the manifest names none)."""
        return "reference.json" if self.language_model else (self.manifest.get("reference") or {}).get("file")

    @property
    def candidate(self) -> str:
        """The build the bundle holds, as its report's row names it."""
        return self.manifest["build"] if self.language_model else self.manifest["candidate"]

    @property
    def latency_unit(self) -> str:
        """What a timing of the bundle counts: a language model's decode time per token, else one call's time."""
        return "ms per token" if self.language_model else "ms"

    @property
    def files(self) -> list[Listed]:
        """The files the manifest lists, in its order."""
        return [Listed(f["path"], f["sha256"], f.get("size")) for f in self.manifest["files"]]

    @property
    def entry(self) -> str:
        """The file the runtime loads, as the manifest names it."""
        return self.manifest["entry"]

    @property
    def backend_name(self) -> str | None:
        return (self.manifest.get("backend") or {}).get("name")

    @property
    def runtime(self) -> Backend | None:
        """The runtime (edgeml.runtimes.BACKENDS) the manifest names, or None when this edgeml does not know it."""
        from edgeml.runtimes import BACKENDS

        return BACKENDS.get(self.backend_name)

    def check_files(self, only: Iterable[str] | None = None) -> list[FileCheck]:
        """Size and sha256 of each listed file (or of those in `only`) against the manifest, in its order.
        A link counts as not a plain file: a bundle holds only plain files."""
        wanted = None if only is None else set(only)
        return [check_file(self.folder, f) for f in self.files if wanted is None or f.path in wanted]

    def added_files(self) -> list[FileCheck]:
        """What lies in the folder besides the manifest and its files, sorted: fine when the manifest names it
        a device file (`device_files`: what a device step such as build_engine.sh writes), else "added"."""
        listed = {f.path for f in self.files} | {MANIFEST}
        device = set(self.manifest.get("device_files") or [])
        checks = []
        for path in sorted(self.folder.rglob("*")):
            relative = path.relative_to(self.folder).as_posix()
            if relative in listed or (path.is_dir() and not path.is_symlink()):
                continue
            if relative in device:
                check = FileCheck(relative, None, "made on the device (see build_engine.sh); not in the manifest")
            else:
                check = FileCheck(relative, "added", "not in the manifest: added after the bundle was made")
            checks.append(check)
        return checks

    def artifact(self, entry: str | None = None) -> Artifact:
        """The bundle's artifact: its backend, precision and runtime settings, loading `entry` (default: its own)."""
        return Artifact(self.backend_name, self.manifest.get("precision", ""), self.folder, entry or self.entry,
                        self.manifest.get("runtime_config") or {})

    def open_runner(self, threads: int, backend: Backend | None = None, entry: str | None = None) -> Runner:
        """The artifact loaded with its runtime (or `backend`, on `entry`, to check it with another), ready to run."""
        return (backend or self.runtime).open(self.artifact(entry), threads)


def check_file(folder: Path, listed: Listed) -> FileCheck:
    """The one sha256 (and size) check of a bundle file, for verify, ship and profile."""
    path = folder / listed.path
    if path.is_symlink() or not path.is_file():
        problem = "missing" if not path.exists() else "not a plain file"
        return FileCheck(listed.path, problem, problem)
    size = path.stat().st_size
    if listed.size is not None and size != listed.size:
        problem = "truncated" if size < listed.size else "grown"
        return FileCheck(listed.path, problem, f"{size:,} bytes, the manifest says {listed.size:,} ({problem})")
    if sha256_file(path) != listed.sha256:
        return FileCheck(listed.path, "changed", "sha256 differs from the manifest's: the content was changed")
    return FileCheck(listed.path, None, f"{size:,} bytes, sha256 matches")
